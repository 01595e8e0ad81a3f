package pgctl

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// WriteConfig (re)writes <DataDir>/coffer.conf, which postgresql.conf
// includes: listen_addresses, port and unix_socket_directories from the
// Cluster's fields plus settings, one per line in key order. The file is
// replaced atomically, so the server never reads half of it. Settings take
// effect on Reload or Restart (some, like shared_buffers, only on Restart).
//
// Those three keys come from the fields only; passing them in settings is
// an error, since ConnString and the socket path checks rely on the fields.
func (c *Cluster) WriteConfig(settings map[string]string) error {
	r, err := c.resolve()
	if err != nil {
		return err
	}
	if err := r.writeConfig(c, settings); err != nil {
		return fmt.Errorf("write postgres config %s: %w", r.dataDir, err)
	}
	return nil
}

func (r *resolved) writeConfig(c *Cluster, settings map[string]string) error {
	if _, err := os.Stat(filepath.Join(r.dataDir, "PG_VERSION")); err != nil {
		return fmt.Errorf("no cluster (run Init first): %w", err)
	}
	all := map[string]string{
		"listen_addresses":        c.ListenAddresses,
		"port":                    strconv.Itoa(r.port),
		"unix_socket_directories": r.socketDir,
	}
	for k, v := range settings {
		key := strings.ToLower(k) // setting names are case-insensitive
		if _, dup := all[key]; dup {
			return fmt.Errorf("setting %q is managed by pgctl (from the Cluster fields) or given twice", k)
		}
		all[key] = v
	}
	conf, err := renderConf(all)
	if err != nil {
		return err
	}
	return r.writeFile(filepath.Join(r.dataDir, confFile), conf)
}

// renderConf formats settings as postgresql.conf lines, keys sorted.
// Every value is quoted: the configuration lexer accepts a quoted string
// for settings of any type, and quoting means no value can break out of
// its line.
func renderConf(settings map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Written by Coffer (internal/pgctl); rewritten on every change, do not edit.\n")
	for _, k := range sortedKeys(settings) {
		if !validSettingName(k) {
			return nil, fmt.Errorf("invalid setting name %q", k)
		}
		v := settings[k]
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("setting %s: value must not contain line breaks or NUL", k)
		}
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(v))
	}
	return b.Bytes(), nil
}

// quoteConf quotes a postgresql.conf value. Backslashes are escapes inside
// quoted values there, so they are doubled as well as quotes.
func quoteConf(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// validSettingName accepts PostgreSQL setting names, including the dotted
// names of extension settings (auto_explain.log_min_duration).
func validSettingName(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' || (k[0] >= '0' && k[0] <= '9') {
		return false
	}
	for _, r := range k {
		if !(r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

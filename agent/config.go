package agent

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Environment variables that override the configuration file. They exist
// for deployments where the credential arrives separately from the file
// (a systemd credential, a secret mounted by an orchestrator) and for
// running an agent by hand.
const (
	EnvConfig     = "COFFER_AGENT_CONFIG" // path of the file; read by Main only
	EnvAPIURL     = "COFFER_AGENT_API_URL"
	EnvInstanceID = "COFFER_AGENT_INSTANCE_ID"
	EnvToken      = "COFFER_AGENT_TOKEN"
	EnvCAFile     = "COFFER_AGENT_CA_FILE" // path of a PEM file; replaces ca_cert
	EnvDataDir    = "COFFER_AGENT_DATA_DIR"
)

// DefaultConfigPath is where Main looks for the configuration when neither
// -config nor COFFER_AGENT_CONFIG names a file.
const DefaultConfigPath = "/etc/coffer/agent.json"

// maxConfigBytes bounds the configuration file; a real one is a few KB
// (mostly the CA certificate).
const maxConfigBytes = 1 << 20

// LoadConfig reads the agent's configuration from the JSON file at path,
// applies the COFFER_AGENT_* environment overrides, fills defaults and
// validates the result. An empty path reads no file: the configuration then
// comes from the environment alone.
//
// Unknown fields in the file are ignored so that an older agent keeps
// working with a file written by a newer control plane.
func LoadConfig(path string) (protocol.AgentConfig, error) {
	return loadConfig(path, os.Getenv)
}

// loadConfig is LoadConfig with the environment as a parameter, so tests
// can run in parallel without touching the process environment.
func loadConfig(path string, getenv func(string) string) (protocol.AgentConfig, error) {
	var cfg protocol.AgentConfig
	if path != "" {
		if err := readConfigFile(path, &cfg); err != nil {
			return protocol.AgentConfig{}, err
		}
	}

	// Trim the environment values: a credential copied from a file often
	// carries a trailing newline, which would make an invalid header.
	if v := strings.TrimSpace(getenv(EnvAPIURL)); v != "" {
		cfg.APIURL = v
	}
	if v := strings.TrimSpace(getenv(EnvInstanceID)); v != "" {
		cfg.InstanceID = v
	}
	if v := strings.TrimSpace(getenv(EnvToken)); v != "" {
		cfg.Token = v
	}
	if v := strings.TrimSpace(getenv(EnvDataDir)); v != "" {
		cfg.DataDir = v
	}
	if v := strings.TrimSpace(getenv(EnvCAFile)); v != "" {
		pem, err := os.ReadFile(v)
		if err != nil {
			return protocol.AgentConfig{}, fmt.Errorf("read CA file named by %s: %w", EnvCAFile, err)
		}
		cfg.CACert = string(pem)
	}

	if cfg.Port == 0 {
		cfg.Port = protocol.DefaultPort(cfg.Datastore)
	}

	if err := validateConfig(cfg); err != nil {
		if path != "" {
			return protocol.AgentConfig{}, fmt.Errorf("agent config %s: %w", path, err)
		}
		return protocol.AgentConfig{}, fmt.Errorf("agent config (environment): %w", err)
	}
	return cfg, nil
}

func readConfigFile(path string, cfg *protocol.AgentConfig) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open agent config: %w", err)
	}
	defer f.Close()

	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return fmt.Errorf("read agent config %s: %w", path, err)
	}
	if len(data) > maxConfigBytes {
		return fmt.Errorf("agent config %s: larger than %d bytes", path, maxConfigBytes)
	}

	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(cfg); err != nil {
		// The decoder's errors name a position or a field, never a value,
		// so they are safe to show even though the file holds the token.
		return fmt.Errorf("parse agent config %s: %w", path, err)
	}
	if dec.More() {
		return fmt.Errorf("parse agent config %s: unexpected data after the JSON object", path)
	}
	return nil
}

// validateConfig checks everything the agent and Main need. The agent's
// own connection settings are checked by validateConnection, which New and
// Reload use for configurations that did not come through LoadConfig.
func validateConfig(cfg protocol.AgentConfig) error {
	var errs []error
	if err := validateConnection(cfg); err != nil {
		errs = append(errs, err)
	}
	if cfg.Datastore == "" {
		errs = append(errs, errors.New("datastore is required"))
	}
	if cfg.DataDir == "" {
		errs = append(errs, fmt.Errorf("data_dir is required (or set %s)", EnvDataDir))
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is out of range", cfg.Port))
	}
	return errors.Join(errs...)
}

// validateConnection checks the settings the agent needs to reach the agent
// API: where, whom to trust, and who it is.
func validateConnection(cfg protocol.AgentConfig) error {
	var errs []error
	if err := validateAPIURL(cfg.APIURL); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(cfg.CACert) == "" {
		errs = append(errs, fmt.Errorf("ca_cert is required (or set %s): the agent trusts only the CA that signed the agent API's certificate", EnvCAFile))
	} else if _, err := certPool(cfg.CACert); err != nil {
		errs = append(errs, err)
	}
	if cfg.InstanceID == "" {
		errs = append(errs, fmt.Errorf("instance_id is required (or set %s)", EnvInstanceID))
	}
	if cfg.Token == "" {
		errs = append(errs, fmt.Errorf("token is required (or set %s)", EnvToken))
	} else if strings.IndexFunc(cfg.Token, isSpaceOrControl) >= 0 {
		// Never echo the token itself.
		errs = append(errs, errors.New("token contains whitespace or control characters"))
	}
	if cfg.HeartbeatSeconds < 0 {
		errs = append(errs, fmt.Errorf("heartbeat_seconds %d is negative", cfg.HeartbeatSeconds))
	}
	return errors.Join(errs...)
}

func validateAPIURL(raw string) error {
	if raw == "" {
		return fmt.Errorf("api_url is required (or set %s)", EnvAPIURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("api_url: %w", err)
	}
	// Plain HTTP is refused even on loopback: the bearer token would travel
	// in clear, and one code path is easier to trust than two.
	if u.Scheme != "https" {
		return fmt.Errorf("api_url %q: scheme must be https", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("api_url %q: host is missing", raw)
	}
	if u.User != nil {
		return fmt.Errorf("api_url: must not carry user info; the credential is the token")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("api_url %q: must not have a query or fragment", raw)
	}
	return nil
}

// certPool builds the only trust store the agent uses: the configured CA,
// without the system roots, so that no other CA can impersonate the
// control plane.
func certPool(caPEM string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, errors.New("ca_cert: no valid PEM certificate found")
	}
	return pool, nil
}

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f
}

package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

func noEnv(string) string { return "" }

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func validConfig(t *testing.T) protocol.AgentConfig {
	return protocol.AgentConfig{
		APIURL:     "https://127.0.0.1:8780",
		CACert:     selfSignedCA(t),
		InstanceID: testInstanceID,
		Token:      testInstanceID + ".secret",
		Datastore:  "postgresql",
		DataDir:    "/var/lib/coffer/instance",
	}
}

func TestLoadConfigFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agent.json")
	in := validConfig(t)
	in.PIDFile = "/run/coffer-agent.pid"
	// A field from a newer control plane must not break an older agent.
	raw, _ := json.Marshal(in)
	raw = append(raw[:len(raw)-1], []byte(`,"from_the_future":true}`)...)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	got, err := loadConfig(path, noEnv)
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	want := in
	want.Port = 5432 // the datastore's default
	if got != want {
		t.Errorf("loadConfig = %+v, want %+v", got, want)
	}
}

func TestLoadConfigEnvOverrides(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.json")
	file := validConfig(t)
	writeJSON(t, path, file)
	caFile := filepath.Join(dir, "ca.pem")
	otherCA := selfSignedCA(t)
	if err := os.WriteFile(caFile, []byte(otherCA), 0o600); err != nil {
		t.Fatal(err)
	}

	got, err := loadConfig(path, envMap(map[string]string{
		EnvAPIURL:     "https://10.0.0.5:8780/coffer/",
		EnvInstanceID: "override-id",
		EnvToken:      "override-id.tok\n",
		EnvCAFile:     caFile,
		EnvDataDir:    "/data",
	}))
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	if got.APIURL != "https://10.0.0.5:8780/coffer/" || got.InstanceID != "override-id" ||
		got.Token != "override-id.tok" || got.CACert != otherCA || got.DataDir != "/data" {
		t.Errorf("environment not applied: %+v", got)
	}
	if got.Datastore != "postgresql" {
		t.Errorf("file value lost: datastore %q", got.Datastore)
	}
}

func TestLoadConfigEnvOnly(t *testing.T) {
	t.Parallel()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte(selfSignedCA(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig("", envMap(map[string]string{
		EnvAPIURL: "https://127.0.0.1:8780", EnvInstanceID: "i", EnvToken: "i.t", EnvCAFile: caFile, EnvDataDir: "/d",
	}))
	// No file means no datastore: still reported, clearly.
	if err == nil || !strings.Contains(err.Error(), "datastore is required") || !strings.Contains(err.Error(), "(environment)") {
		t.Errorf("loadConfig without file: %v, want a missing-datastore error", err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		mutate func(*protocol.AgentConfig)
		env    map[string]string
		want   string
	}{
		{"http", func(c *protocol.AgentConfig) { c.APIURL = "http://127.0.0.1:8780" }, nil, "scheme must be https"},
		{"no url", func(c *protocol.AgentConfig) { c.APIURL = "" }, nil, "api_url is required"},
		{"no host", func(c *protocol.AgentConfig) { c.APIURL = "https:///x" }, nil, "host is missing"},
		{"user info", func(c *protocol.AgentConfig) { c.APIURL = "https://u:p@h" }, nil, "user info"},
		{"no CA", func(c *protocol.AgentConfig) { c.CACert = "" }, nil, "ca_cert is required"},
		{"bad CA", func(c *protocol.AgentConfig) { c.CACert = "not a pem" }, nil, "no valid PEM certificate"},
		{"no id", func(c *protocol.AgentConfig) { c.InstanceID = "" }, nil, "instance_id is required"},
		{"no token", func(c *protocol.AgentConfig) { c.Token = "" }, nil, "token is required"},
		{"token space", func(c *protocol.AgentConfig) { c.Token = "a b" }, nil, "token contains whitespace"},
		{"no datastore", func(c *protocol.AgentConfig) { c.Datastore = "" }, nil, "datastore is required"},
		{"no data dir", func(c *protocol.AgentConfig) { c.DataDir = "" }, nil, "data_dir is required"},
		{"bad heartbeat", func(c *protocol.AgentConfig) { c.HeartbeatSeconds = -1 }, nil, "heartbeat_seconds -1"},
		{"missing CA file", nil, map[string]string{EnvCAFile: filepath.Join(dir, "nope.pem")}, EnvCAFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := validConfig(t)
			if tc.mutate != nil {
				tc.mutate(&cfg)
			}
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".json")
			writeJSON(t, path, cfg)
			_, err := loadConfig(path, envMap(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("loadConfig: %v, want an error containing %q", err, tc.want)
			}
			if cfg.Token != "" && strings.Contains(err.Error(), cfg.Token) {
				t.Errorf("error reveals the token: %v", err)
			}
		})
	}
}

func TestLoadConfigBadFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := loadConfig(filepath.Join(dir, "missing.json"), noEnv); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
	for name, body := range map[string]string{
		"syntax.json":   `{"api_url": `,
		"trailing.json": `{} {}`,
		"type.json":     `{"port": "5432"}`,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadConfig(path, noEnv); err == nil || !strings.Contains(err.Error(), "parse agent config") {
			t.Errorf("%s: %v, want a parse error", name, err)
		}
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	cfg := validConfig(t)
	cfg.Token = ""
	if _, err := New(cfg, newFakeDriver(), nil); err == nil || !strings.Contains(err.Error(), "token is required") {
		t.Errorf("New without token: %v", err)
	}
	if _, err := New(validConfig(t), nil, nil); err == nil {
		t.Error("New without driver succeeded")
	}
}

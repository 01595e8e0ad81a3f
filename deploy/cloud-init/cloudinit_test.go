package cloudinit

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

func testParams() Params {
	return Params{
		Agent: protocol.AgentConfig{
			APIURL:        "https://10.0.0.1:8780",
			CACert:        "-----BEGIN CERTIFICATE-----\nMIIB: not: yaml\n'\"{}[]\n-----END CERTIFICATE-----\n",
			InstanceID:    "0b6f0c4e-8a55-4a0e-9a59-2f7f4fbbd7a1",
			Token:         "0b6f0c4e-8a55-4a0e-9a59-2f7f4fbbd7a1.secret",
			Datastore:     "postgresql",
			ListenAddress: "0.0.0.0",
			Port:          5432,
			PIDFile:       PIDFile,
		},
		VolumeID: "6b0f7c2a-5d4e-4f38-9b1a-0c2d3e4f5a6b",
	}
}

func TestRenderRoundTrip(t *testing.T) {
	t.Parallel()
	p := testParams()
	ud, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseAgentConfig(ud)
	if err != nil {
		t.Fatal(err)
	}
	want := p.Agent
	want.DataDir = DataDir
	if got != want {
		t.Fatalf("agent config read back:\n got %+v\nwant %+v", got, want)
	}
	s := string(ud)
	for _, frag := range []string{
		"permissions: '0600'",
		"- [" + MountScript + ", " + p.VolumeID + ", " + DataDir + "]",
		"[systemctl, enable, --now, coffer-agent.service]",
	} {
		if !strings.Contains(s, frag) {
			t.Errorf("user-data lacks %q:\n%s", frag, s)
		}
	}
	unit, err := fileContent(s, "/etc/systemd/system/coffer-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart="+DefaultAgentPath+" -config "+ConfigPath+"\n") ||
		!strings.Contains(string(unit), "RequiresMountsFor="+DataDir+"\n") {
		t.Fatalf("unit:\n%s", unit)
	}
	if strings.Contains(s, p.Agent.Token) {
		t.Fatal("the credential appears in clear; it must only be inside the base64 file content")
	}
}

func TestRenderRefusesUnsafeValues(t *testing.T) {
	t.Parallel()
	for name, mod := range map[string]func(*Params){
		"volume id":   func(p *Params) { p.VolumeID = "x, y]" },
		"no volume":   func(p *Params) { p.VolumeID = "" },
		"instance id": func(p *Params) { p.Agent.InstanceID = "a b" },
		"data dir":    func(p *Params) { p.Agent.DataDir = "relative" },
		"agent path":  func(p *Params) { p.AgentPath = "/usr/bin/../x" },
		"too large":   func(p *Params) { p.Agent.CACert = strings.Repeat("x", MaxUserData) },
	} {
		p := testParams()
		mod(&p)
		if _, err := Render(p); err == nil {
			t.Errorf("%s: Render accepted it", name)
		}
	}
}

// TestSchema validates the user-data with cloud-init's own schema check
// and the mount script with the shell, when cloud-init is installed (it is
// not needed for anything else: `apt-get install cloud-init`).
func TestSchema(t *testing.T) {
	t.Parallel()
	script := filepath.Join(t.TempDir(), "mount-volume.sh")
	if err := os.WriteFile(script, mountScript, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("sh -n mount-volume.sh: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("cloud-init"); err != nil {
		t.Skip("SKIPPING the schema check: cloud-init is not installed")
	}
	ud, err := Render(testParams())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(file, ud, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("cloud-init", "schema", "--config-file", file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Valid cloud-config") {
		t.Fatalf("cloud-init schema: %v\n%s\n%s", err, out, ud)
	}
}

func TestParseRejectsForeignUserData(t *testing.T) {
	t.Parallel()
	for _, ud := range []string{
		"#!/bin/sh\necho hi\n",
		"#cloud-config\nwrite_files: []\n",
		"#cloud-config\nwrite_files:\n  - path: " + ConfigPath + "\n    content: !!!\n",
	} {
		if _, err := ParseAgentConfig([]byte(ud)); err == nil {
			t.Errorf("ParseAgentConfig(%q) succeeded", ud)
		}
	}
	ok := "#cloud-config\nwrite_files:\n  - path: " + ConfigPath + "\n    content: " +
		base64.StdEncoding.EncodeToString([]byte(`{"instance_id":"x"}`)) + "\n"
	if cfg, err := ParseAgentConfig([]byte(ok)); err != nil || cfg.InstanceID != "x" {
		t.Fatalf("ParseAgentConfig: %+v, %v", cfg, err)
	}
}

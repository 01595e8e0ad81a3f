// Package cloudinit renders the cloud-init user-data that bootstraps the
// guest agent on an OpenStack server, and reads it back.
//
// The user-data (user-data.yaml.tmpl, a #cloud-config document) writes the
// agent's configuration to /etc/coffer/agent.json (mode 0600: it holds the
// instance's credential), mounts the instance's Cinder volume at the
// agent's DataDir with mount-volume.sh (formatting it only when it has no
// filesystem yet), and installs and starts coffer-agent.service. Nothing
// is passed as a Nova personality file, and the guest receives no secret of
// the platform: only its own credential and the agent API's CA.
//
// File contents are embedded base64-encoded, so no value (a PEM, a token)
// can break the YAML. Nova accepts at most 65,535 bytes of base64
// user-data; Render refuses anything larger.
//
// The image must contain the agent binary (AgentPath, default
// /usr/local/bin/coffer-agent), cloud-init, systemd, blkid and mkfs.ext4.
package cloudinit

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"text/template"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Where things live on the guest.
const (
	// ConfigPath is the agent's configuration file.
	ConfigPath = "/etc/coffer/agent.json"
	// DataDir is where the instance's volume is mounted: the agent's
	// DataDir.
	DataDir = "/var/lib/coffer/volume"
	// PIDFile is where the agent writes its pid.
	PIDFile = "/run/coffer-agent.pid"
	// DefaultAgentPath is the agent binary the image is expected to hold.
	DefaultAgentPath = "/usr/local/bin/coffer-agent"
	// MountScript is where the volume mount helper is written.
	MountScript = "/usr/local/lib/coffer/mount-volume.sh"
)

// MaxUserData is Nova's limit on user-data, base64-encoded.
const MaxUserData = 65535

var (
	//go:embed user-data.yaml.tmpl
	userDataTemplate string
	//go:embed coffer-agent.service.tmpl
	unitTemplate string
	//go:embed mount-volume.sh
	mountScript []byte

	userDataTmpl = template.Must(template.New("user-data").Option("missingkey=error").Parse(userDataTemplate))
	unitTmpl     = template.Must(template.New("unit").Option("missingkey=error").Parse(unitTemplate))
)

// Params is what a guest's user-data is made of.
type Params struct {
	// Agent is written to ConfigPath as is. Its DataDir is where the
	// volume is mounted (DataDir when empty).
	Agent protocol.AgentConfig
	// VolumeID is the Cinder volume that holds the datastore's files.
	VolumeID string
	// AgentPath is the agent binary on the image (DefaultAgentPath when
	// empty).
	AgentPath string
}

// Values the template places unquoted into YAML flow sequences and the
// unit file; anything else is refused rather than escaped.
var (
	safeID   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
	safePath = regexp.MustCompile(`^/[A-Za-z0-9._/-]*$`)
)

// Render returns the user-data for p.
func Render(p Params) ([]byte, error) {
	cfg := p.Agent
	if cfg.DataDir == "" {
		cfg.DataDir = DataDir
	}
	agentPath := p.AgentPath
	if agentPath == "" {
		agentPath = DefaultAgentPath
	}
	if !safeID.MatchString(p.VolumeID) {
		return nil, fmt.Errorf("render user-data: invalid volume id %q", p.VolumeID)
	}
	if !safeID.MatchString(cfg.InstanceID) {
		return nil, fmt.Errorf("render user-data: invalid instance id %q", cfg.InstanceID)
	}
	for _, pth := range []string{cfg.DataDir, agentPath} {
		if !safePath.MatchString(pth) || path.Clean(pth) != pth || pth == "/" {
			return nil, fmt.Errorf("render user-data: %q is not a clean absolute path", pth)
		}
	}

	agentJSON, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render user-data: encode agent configuration: %w", err)
	}
	var unit bytes.Buffer
	if err := unitTmpl.Execute(&unit, map[string]string{
		"AgentPath": agentPath, "ConfigPath": ConfigPath, "DataDir": cfg.DataDir,
	}); err != nil {
		return nil, fmt.Errorf("render user-data: agent unit: %w", err)
	}
	b64 := base64.StdEncoding.EncodeToString
	var out bytes.Buffer
	if err := userDataTmpl.Execute(&out, map[string]string{
		"InstanceID":     cfg.InstanceID,
		"ConfigPath":     ConfigPath,
		"AgentConfigB64": b64(append(agentJSON, '\n')),
		"MountScript":    MountScript,
		"MountScriptB64": b64(mountScript),
		"UnitB64":        b64(unit.Bytes()),
		"VolumeID":       p.VolumeID,
		"DataDir":        cfg.DataDir,
	}); err != nil {
		return nil, fmt.Errorf("render user-data: %w", err)
	}
	if n := base64.StdEncoding.EncodedLen(out.Len()); n > MaxUserData {
		return nil, fmt.Errorf("render user-data: %d bytes base64-encoded, Nova accepts at most %d", n, MaxUserData)
	}
	return out.Bytes(), nil
}

// ParseAgentConfig returns the agent configuration that user-data made by
// Render writes to ConfigPath: what a test that plays cloud-init (the fake
// hypervisor boots nothing) starts an agent with. It reads only the
// layout Render produces; it is not a YAML parser.
func ParseAgentConfig(userData []byte) (protocol.AgentConfig, error) {
	var cfg protocol.AgentConfig
	content, err := fileContent(string(userData), ConfigPath)
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(content, &cfg); err != nil {
		return cfg, fmt.Errorf("user-data: decode %s: %w", ConfigPath, err)
	}
	return cfg, nil
}

// fileContent finds the write_files entry for name and decodes its
// base64 content.
func fileContent(userData, name string) ([]byte, error) {
	if !strings.HasPrefix(userData, "#cloud-config\n") {
		return nil, errors.New("user-data: not a #cloud-config document")
	}
	inEntry := false
	for line := range strings.SplitSeq(userData, "\n") {
		trimmed := strings.TrimSpace(line)
		if p, ok := strings.CutPrefix(trimmed, "- path: "); ok {
			inEntry = p == name
			continue
		}
		if c, ok := strings.CutPrefix(trimmed, "content: "); ok && inEntry {
			b, err := base64.StdEncoding.DecodeString(c)
			if err != nil {
				return nil, fmt.Errorf("user-data: content of %s: %w", name, err)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("user-data: no file %s", name)
}

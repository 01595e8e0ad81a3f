// Package controlplane assembles Coffer's processes from their parts: the
// configuration (environment variables, 12-factor), the control-plane
// database (a URL, or an embedded throwaway cluster), the catalog seed, and
// the API, worker and all-in-one roles the binaries in cmd/ run.
package controlplane

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/ratelimit"
)

// Config is every setting, read from the environment by FromEnv. The
// README documents each variable.
type Config struct {
	DataDir          string        // COFFER_DATA_DIR
	DatabaseURL      string        // COFFER_DATABASE_URL; empty: embedded cluster under DataDir
	Listen           string        // COFFER_LISTEN: public API (plain HTTP; put TLS in front off loopback)
	AgentListen      string        // COFFER_AGENT_LISTEN: agent API (always TLS)
	AgentAPIURL      string        // COFFER_AGENT_API_URL: the agent API as guests reach it (default: https://<AgentListen>)
	TLSHosts         []string      // COFFER_TLS_HOSTS: extra names/IPs for the agent API certificate
	Provider         string        // COFFER_PROVIDER: local or openstack (COFFER_OS_* settings)
	LocalRoot        string        // COFFER_LOCAL_ROOT: instance directories of the local provider
	LocalAddresses   string        // COFFER_LOCAL_ADDRESS_PREFIX: loopback /16 for instances (127.10)
	AgentCommand     []string      // COFFER_AGENT_COMMAND: how the local provider starts an agent
	Region           string        // COFFER_REGION
	DefaultDatastore string        // COFFER_DEFAULT_DATASTORE
	MaxVolumeGB      int           // COFFER_MAX_VOLUME_GB
	BuildTimeout     time.Duration // COFFER_BUILD_TIMEOUT
	MaxWorkers       int           // COFFER_MAX_WORKERS
	DemoProject      string        // COFFER_DEMO_PROJECT: name of the seeded project
	LogLevel         slog.Level    // COFFER_LOG_LEVEL: debug, info, warn, error

	// Auth selects how API tokens are validated: "builtin" (tokens issued
	// by Coffer, stored hashed) or "keystone" (Keystone v3 with the
	// service user below).
	Auth     string              // COFFER_AUTH: builtin (default) or keystone
	Keystone auth.KeystoneConfig // COFFER_KEYSTONE_*: URL, USERNAME, PASSWORD, PROJECT_NAME, USER_DOMAIN_NAME, PROJECT_DOMAIN_NAME, CACHE_TTL
	// RateLimits are Trove's per-project request limits; none: unlimited.
	RateLimits []ratelimit.Limit // COFFER_RATE_LIMITS: default, off, or (VERB, URI, REGEX, VALUE, UNIT);...
}

// FromEnv reads the configuration. self is the running executable, used
// for the default agent command ("<self> agent").
func FromEnv(self string) (Config, error) {
	c := Config{
		DataDir:          env("COFFER_DATA_DIR", defaultDataDir()),
		DatabaseURL:      os.Getenv("COFFER_DATABASE_URL"),
		Listen:           env("COFFER_LISTEN", "127.0.0.1:8779"),
		AgentListen:      env("COFFER_AGENT_LISTEN", "127.0.0.1:8780"),
		Provider:         env("COFFER_PROVIDER", "local"),
		Region:           env("COFFER_REGION", "RegionOne"),
		DefaultDatastore: env("COFFER_DEFAULT_DATASTORE", "postgresql"),
		DemoProject:      env("COFFER_DEMO_PROJECT", "demo"),
	}
	// Empty: derived from the agent listener once it is bound.
	c.AgentAPIURL = os.Getenv("COFFER_AGENT_API_URL")
	c.LocalRoot = env("COFFER_LOCAL_ROOT", filepath.Join(c.DataDir, "instances"))
	c.LocalAddresses = env("COFFER_LOCAL_ADDRESS_PREFIX", "127.10")
	if v := os.Getenv("COFFER_TLS_HOSTS"); v != "" {
		c.TLSHosts = strings.Split(v, ",")
	}
	if v := os.Getenv("COFFER_AGENT_COMMAND"); v != "" {
		c.AgentCommand = strings.Fields(v)
	} else {
		c.AgentCommand = []string{self, "agent"}
	}
	var err error
	if c.MaxVolumeGB, err = envInt("COFFER_MAX_VOLUME_GB", 10); err != nil {
		return c, err
	}
	if c.MaxWorkers, err = envInt("COFFER_MAX_WORKERS", 20); err != nil {
		return c, err
	}
	if c.BuildTimeout, err = time.ParseDuration(env("COFFER_BUILD_TIMEOUT", "10m")); err != nil {
		return c, fmt.Errorf("COFFER_BUILD_TIMEOUT: %w", err)
	}
	if err := c.LogLevel.UnmarshalText([]byte(env("COFFER_LOG_LEVEL", "info"))); err != nil {
		return c, fmt.Errorf("COFFER_LOG_LEVEL: %w", err)
	}
	if err := c.authFromEnv(); err != nil {
		return c, err
	}
	if c.RateLimits, err = ratelimit.ParseLimits(env("COFFER_RATE_LIMITS", "default")); err != nil {
		return c, fmt.Errorf("COFFER_RATE_LIMITS: %w", err)
	}
	if c.Provider != "local" && c.Provider != "openstack" {
		return c, fmt.Errorf("COFFER_PROVIDER %q is not supported (supported: local, openstack)", c.Provider)
	}
	if c.DataDir, err = filepath.Abs(c.DataDir); err != nil {
		return c, err
	}
	if c.LocalRoot, err = filepath.Abs(c.LocalRoot); err != nil {
		return c, err
	}
	return c, nil
}

// authFromEnv reads COFFER_AUTH and, for keystone, the service user's
// credentials (all required but the domains, which default to Default).
func (c *Config) authFromEnv() error {
	c.Auth = env("COFFER_AUTH", "builtin")
	switch c.Auth {
	case "builtin":
		return nil
	case "keystone":
	default:
		return fmt.Errorf("COFFER_AUTH %q is not supported (supported: builtin, keystone)", c.Auth)
	}
	c.Keystone = auth.KeystoneConfig{
		AuthURL:           os.Getenv("COFFER_KEYSTONE_URL"),
		Username:          os.Getenv("COFFER_KEYSTONE_USERNAME"),
		Password:          os.Getenv("COFFER_KEYSTONE_PASSWORD"),
		ProjectName:       os.Getenv("COFFER_KEYSTONE_PROJECT_NAME"),
		UserDomainName:    env("COFFER_KEYSTONE_USER_DOMAIN_NAME", "Default"),
		ProjectDomainName: env("COFFER_KEYSTONE_PROJECT_DOMAIN_NAME", "Default"),
	}
	for _, v := range []struct{ name, value string }{
		{"COFFER_KEYSTONE_URL", c.Keystone.AuthURL}, {"COFFER_KEYSTONE_USERNAME", c.Keystone.Username},
		{"COFFER_KEYSTONE_PASSWORD", c.Keystone.Password}, {"COFFER_KEYSTONE_PROJECT_NAME", c.Keystone.ProjectName},
	} {
		if v.value == "" {
			return fmt.Errorf("COFFER_AUTH=keystone needs %s", v.name)
		}
	}
	ttl, err := time.ParseDuration(env("COFFER_KEYSTONE_CACHE_TTL", "60s"))
	if err != nil || ttl < 0 {
		return fmt.Errorf("COFFER_KEYSTONE_CACHE_TTL must be a duration >= 0 (e.g. 60s; 0 disables the cache), got %q", os.Getenv("COFFER_KEYSTONE_CACHE_TTL"))
	}
	if ttl == 0 {
		ttl = -1 // KeystoneConfig: negative disables, zero means the default
	}
	c.Keystone.CacheTTL = ttl
	return nil
}

// defaultDataDir: as root, /var/lib/coffer (datastores run as their own OS
// users and must traverse it, which /root forbids); otherwise the user's
// state directory.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/coffer"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "coffer")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "state", "coffer")
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func envInt(key string, def int) (int, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s must be a positive integer, got %q", key, v)
	}
	return n, nil
}

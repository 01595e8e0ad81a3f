package objectstore

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Secret is a credential. It prints as [redacted] (fmt verbs, slog), so a
// Config can be logged or put in an error without leaking it.
type Secret string

// String hides the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString hides the secret from %#v.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// LogValue hides the secret from log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Config selects and configures the object store backups go to.
type Config struct {
	// Name is the location's name, recorded with each backup
	// (backup.location); default: Kind.
	Name string
	// Kind is file, s3 or swift (COFFER_BACKUP_STORE, default file).
	Kind string
	// Container is the default container (bucket) for backups
	// (COFFER_BACKUP_CONTAINER; default database_backups, Trove's; for s3
	// database-backups, as bucket names cannot hold underscores).
	Container string

	File  FileConfig
	S3    S3Config
	Swift SwiftConfig
}

// FileConfig configures the file store.
type FileConfig struct {
	// Dir holds the containers (COFFER_BACKUP_FILE_DIR, default
	// <data dir>/backups).
	Dir string
	// BaseURL is the agent API's URL as guests reach it, which grant URLs
	// start with (COFFER_AGENT_API_URL when set; otherwise the control
	// plane sets it once its listener is bound, see File.SetBaseURL).
	BaseURL string
}

// S3Config configures the S3 store.
type S3Config struct {
	Endpoint  string // COFFER_S3_ENDPOINT: host[:port], or http(s)://host[:port]
	AccessKey string // COFFER_S3_ACCESS_KEY
	SecretKey Secret // COFFER_S3_SECRET_KEY
	Region    string // COFFER_S3_REGION (empty: asked from the server per bucket)
	Secure    bool   // COFFER_S3_SECURE (default true; implied by an http(s):// endpoint)
}

// SwiftConfig configures the Swift store.
type SwiftConfig struct {
	// Auth is "tempauth" (v1 auth: AuthURL, User, Key) or "keystone"
	// (Keystone v3 password auth, the object-store endpoint of Region from
	// the catalog). COFFER_SWIFT_AUTH, default tempauth.
	Auth    string
	AuthURL string // COFFER_SWIFT_AUTH_URL, e.g. http://swift:8080/auth/v1.0
	User    string // COFFER_SWIFT_USER, account:user
	Key     Secret // COFFER_SWIFT_KEY

	Keystone KeystoneConfig // COFFER_KEYSTONE_* (the control plane's service user)
	Region   string         // COFFER_REGION

	// TempURLKey signs TempURLs (COFFER_SWIFT_TEMPURL_KEY). Empty: use the
	// container's or account's key, or put a generated one on the
	// container.
	TempURLKey Secret
}

// KeystoneConfig is a Keystone v3 password authentication.
type KeystoneConfig struct {
	AuthURL           string // COFFER_KEYSTONE_URL
	Username          string // COFFER_KEYSTONE_USERNAME
	Password          Secret // COFFER_KEYSTONE_PASSWORD
	ProjectName       string // COFFER_KEYSTONE_PROJECT_NAME
	UserDomainName    string // COFFER_KEYSTONE_USER_DOMAIN_NAME, default Default
	ProjectDomainName string // COFFER_KEYSTONE_PROJECT_DOMAIN_NAME, default Default
}

// Defaults.
const (
	DefaultContainer   = "database_backups" // Trove's default Swift container
	DefaultS3Container = "database-backups" // S3 bucket names cannot hold "_"
)

// FromEnv reads the store's configuration from the environment (see the
// field comments for the variables). dataDir is the control plane's data
// directory (for the file store's default directory).
func FromEnv(dataDir string) (Config, error) {
	return fromEnv(dataDir, os.Getenv)
}

func fromEnv(dataDir string, getenv func(string) string) (Config, error) {
	envOr := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	c := Config{Kind: envOr("COFFER_BACKUP_STORE", "file")}
	switch c.Kind {
	case "file", "s3", "swift":
	default:
		return c, fmt.Errorf("COFFER_BACKUP_STORE %q is not supported (supported: file, s3, swift)", c.Kind)
	}
	c.Name = c.Kind
	def := DefaultContainer
	if c.Kind == "s3" {
		def = DefaultS3Container
	}
	c.Container = envOr("COFFER_BACKUP_CONTAINER", def)

	switch c.Kind {
	case "file":
		dir := getenv("COFFER_BACKUP_FILE_DIR")
		if dir == "" {
			if dataDir == "" {
				return c, fmt.Errorf("COFFER_BACKUP_FILE_DIR is not set and there is no data directory to default to")
			}
			dir = filepath.Join(dataDir, "backups")
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return c, fmt.Errorf("COFFER_BACKUP_FILE_DIR %q: %w", dir, err)
		}
		c.File = FileConfig{Dir: abs, BaseURL: getenv("COFFER_AGENT_API_URL")}
	case "s3":
		c.S3 = S3Config{
			Endpoint:  getenv("COFFER_S3_ENDPOINT"),
			AccessKey: getenv("COFFER_S3_ACCESS_KEY"),
			SecretKey: Secret(getenv("COFFER_S3_SECRET_KEY")),
			Region:    getenv("COFFER_S3_REGION"),
			Secure:    true,
		}
		if v := getenv("COFFER_S3_SECURE"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return c, fmt.Errorf("COFFER_S3_SECURE must be true or false, got %q", v)
			}
			c.S3.Secure = b
		}
		// An http(s):// endpoint says itself whether it is secure.
		if scheme, host, ok := strings.Cut(c.S3.Endpoint, "://"); ok {
			secure := strings.EqualFold(scheme, "https")
			if !secure && !strings.EqualFold(scheme, "http") {
				return c, fmt.Errorf("COFFER_S3_ENDPOINT %q: scheme must be http or https", c.S3.Endpoint)
			}
			if v := getenv("COFFER_S3_SECURE"); v != "" && c.S3.Secure != secure {
				return c, fmt.Errorf("COFFER_S3_SECURE=%s contradicts COFFER_S3_ENDPOINT %q", v, c.S3.Endpoint)
			}
			c.S3.Endpoint, c.S3.Secure = strings.TrimSuffix(host, "/"), secure
		}
	case "swift":
		c.Swift = SwiftConfig{
			Auth:       envOr("COFFER_SWIFT_AUTH", "tempauth"),
			AuthURL:    getenv("COFFER_SWIFT_AUTH_URL"),
			User:       getenv("COFFER_SWIFT_USER"),
			Key:        Secret(getenv("COFFER_SWIFT_KEY")),
			Region:     envOr("COFFER_REGION", "RegionOne"),
			TempURLKey: Secret(getenv("COFFER_SWIFT_TEMPURL_KEY")),
		}
		if c.Swift.Auth == "keystone" {
			c.Swift.Keystone = KeystoneConfig{
				AuthURL:           getenv("COFFER_KEYSTONE_URL"),
				Username:          getenv("COFFER_KEYSTONE_USERNAME"),
				Password:          Secret(getenv("COFFER_KEYSTONE_PASSWORD")),
				ProjectName:       getenv("COFFER_KEYSTONE_PROJECT_NAME"),
				UserDomainName:    envOr("COFFER_KEYSTONE_USER_DOMAIN_NAME", "Default"),
				ProjectDomainName: envOr("COFFER_KEYSTONE_PROJECT_DOMAIN_NAME", "Default"),
			}
		}
	}
	return c, c.Validate()
}

// Validate checks that the configuration is complete; errors name the
// environment variable to fix (never a secret's value).
func (c Config) Validate() error {
	if err := checkContainer(c.Container); err != nil {
		return fmt.Errorf("COFFER_BACKUP_CONTAINER: %w", err)
	}
	switch c.Kind {
	case "file":
		if c.File.Dir == "" {
			return fmt.Errorf("COFFER_BACKUP_FILE_DIR is empty")
		}
		if c.File.BaseURL != "" {
			if _, err := checkBaseURL(c.File.BaseURL); err != nil {
				return fmt.Errorf("COFFER_AGENT_API_URL: %w", err)
			}
		}
	case "s3":
		if err := required("COFFER_BACKUP_STORE=s3", "COFFER_S3_ENDPOINT", c.S3.Endpoint,
			"COFFER_S3_ACCESS_KEY", c.S3.AccessKey, "COFFER_S3_SECRET_KEY", string(c.S3.SecretKey)); err != nil {
			return err
		}
		if strings.ContainsAny(c.S3.Endpoint, "/?#@ ") {
			return fmt.Errorf("COFFER_S3_ENDPOINT %q must be host[:port] or http(s)://host[:port]", c.S3.Endpoint)
		}
		if err := s3utils.CheckValidBucketNameStrict(c.Container); err != nil {
			return fmt.Errorf("COFFER_BACKUP_CONTAINER %q is not a valid S3 bucket name: %w", c.Container, err)
		}
	case "swift":
		switch c.Swift.Auth {
		case "tempauth":
			if err := required("COFFER_SWIFT_AUTH=tempauth", "COFFER_SWIFT_AUTH_URL", c.Swift.AuthURL,
				"COFFER_SWIFT_USER", c.Swift.User, "COFFER_SWIFT_KEY", string(c.Swift.Key)); err != nil {
				return err
			}
			if _, err := swauthBase(c.Swift.AuthURL); err != nil {
				return fmt.Errorf("COFFER_SWIFT_AUTH_URL: %w", err)
			}
		case "keystone":
			k := c.Swift.Keystone
			if err := required("COFFER_SWIFT_AUTH=keystone", "COFFER_KEYSTONE_URL", k.AuthURL,
				"COFFER_KEYSTONE_USERNAME", k.Username, "COFFER_KEYSTONE_PASSWORD", string(k.Password),
				"COFFER_KEYSTONE_PROJECT_NAME", k.ProjectName, "COFFER_REGION", c.Swift.Region); err != nil {
				return err
			}
			if u, err := url.Parse(k.AuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("COFFER_KEYSTONE_URL %q is not an http(s) URL", k.AuthURL)
			}
		default:
			return fmt.Errorf("COFFER_SWIFT_AUTH %q is not supported (supported: tempauth, keystone)", c.Swift.Auth)
		}
	default:
		return fmt.Errorf("COFFER_BACKUP_STORE %q is not supported (supported: file, s3, swift)", c.Kind)
	}
	return nil
}

// checkBaseURL checks a file store base URL (see File.SetBaseURL) and
// returns it without trailing slashes.
func checkBaseURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q is not an http(s) URL without query", base)
	}
	return strings.TrimRight(base, "/"), nil
}

// required fails naming the first variable (name, value pairs) that is
// empty.
func required(why string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return fmt.Errorf("%s needs %s", why, pairs[i])
		}
	}
	return nil
}

// Open makes the configured store and ensures its default container
// exists, so that wrong credentials or an unreachable endpoint fail at
// start-up rather than at the first backup.
func Open(ctx context.Context, c Config) (Store, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var (
		s   Store
		err error
	)
	switch c.Kind {
	case "file":
		s, err = NewFile(c.File.Dir, c.File.BaseURL)
	case "s3":
		s, err = NewS3(c.S3)
	case "swift":
		s, err = NewSwift(ctx, c.Swift)
	}
	if err != nil {
		return nil, err
	}
	if err := s.EnsureContainer(ctx, c.Container); err != nil {
		return nil, err
	}
	return s, nil
}

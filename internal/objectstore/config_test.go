package objectstore_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
)

func TestFromEnv(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-value-never-shown"
	for _, tc := range []struct {
		name string
		env  map[string]string
		want func(objectstore.Config) bool
		err  string // substring of the error; "" = no error
	}{
		{name: "default file", env: nil, want: func(c objectstore.Config) bool {
			return c.Kind == "file" && c.Name == "file" && c.Container == "database_backups" && c.File.Dir == "/data/backups" && c.File.BaseURL == ""
		}},
		{name: "file with dir and agent URL", env: map[string]string{"COFFER_BACKUP_FILE_DIR": "/srv/b", "COFFER_AGENT_API_URL": "https://10.0.0.1:8780", "COFFER_BACKUP_CONTAINER": "mine"},
			want: func(c objectstore.Config) bool {
				return c.File.Dir == "/srv/b" && c.File.BaseURL == "https://10.0.0.1:8780" && c.Container == "mine"
			}},
		{name: "unknown store", env: map[string]string{"COFFER_BACKUP_STORE": "ftp"}, err: "COFFER_BACKUP_STORE"},
		{name: "bad container", env: map[string]string{"COFFER_BACKUP_CONTAINER": "a/b"}, err: "COFFER_BACKUP_CONTAINER"},
		{name: "bad agent URL", env: map[string]string{"COFFER_AGENT_API_URL": "ftp://x"}, err: "COFFER_AGENT_API_URL"},
		{name: "s3", env: map[string]string{"COFFER_BACKUP_STORE": "s3", "COFFER_S3_ENDPOINT": "http://127.0.0.1:9000/", "COFFER_S3_ACCESS_KEY": "ak", "COFFER_S3_SECRET_KEY": secret, "COFFER_S3_REGION": "eu-1"},
			want: func(c objectstore.Config) bool {
				return c.Kind == "s3" && c.Name == "s3" && c.Container == "database-backups" && c.S3.Endpoint == "127.0.0.1:9000" &&
					!c.S3.Secure && c.S3.AccessKey == "ak" && string(c.S3.SecretKey) == secret && c.S3.Region == "eu-1"
			}},
		{name: "s3 secure by default", env: map[string]string{"COFFER_BACKUP_STORE": "s3", "COFFER_S3_ENDPOINT": "s3.example.com", "COFFER_S3_ACCESS_KEY": "ak", "COFFER_S3_SECRET_KEY": secret},
			want: func(c objectstore.Config) bool { return c.S3.Secure && c.S3.Endpoint == "s3.example.com" }},
		{name: "s3 insecure", env: map[string]string{"COFFER_BACKUP_STORE": "s3", "COFFER_S3_ENDPOINT": "minio:9000", "COFFER_S3_SECURE": "false", "COFFER_S3_ACCESS_KEY": "ak", "COFFER_S3_SECRET_KEY": secret},
			want: func(c objectstore.Config) bool { return !c.S3.Secure }},
		{name: "s3 secure contradicts endpoint", env: map[string]string{"COFFER_BACKUP_STORE": "s3", "COFFER_S3_ENDPOINT": "http://minio:9000", "COFFER_S3_SECURE": "true", "COFFER_S3_ACCESS_KEY": "ak", "COFFER_S3_SECRET_KEY": secret}, err: "COFFER_S3_SECURE"},
		{name: "s3 bad secure", env: map[string]string{"COFFER_BACKUP_STORE": "s3", "COFFER_S3_ENDPOINT": "minio:9000", "COFFER_S3_SECURE": "maybe", "COFFER_S3_ACCESS_KEY": "ak", "COFFER_S3_SECRET_KEY": secret}, err: "COFFER_S3_SECURE"},
		{name: "s3 no endpoint", env: map[string]string{"COFFER_BACKUP_STORE": "s3", "COFFER_S3_ACCESS_KEY": "ak", "COFFER_S3_SECRET_KEY": secret}, err: "COFFER_S3_ENDPOINT"},
		{name: "s3 no secret", env: map[string]string{"COFFER_BACKUP_STORE": "s3", "COFFER_S3_ENDPOINT": "minio:9000", "COFFER_S3_ACCESS_KEY": "ak"}, err: "COFFER_S3_SECRET_KEY"},
		{name: "s3 endpoint with path", env: map[string]string{"COFFER_BACKUP_STORE": "s3", "COFFER_S3_ENDPOINT": "http://minio:9000/bucket", "COFFER_S3_ACCESS_KEY": "ak", "COFFER_S3_SECRET_KEY": secret}, err: "COFFER_S3_ENDPOINT"},
		{name: "s3 underscore bucket", env: map[string]string{"COFFER_BACKUP_STORE": "s3", "COFFER_BACKUP_CONTAINER": "database_backups", "COFFER_S3_ENDPOINT": "minio:9000", "COFFER_S3_ACCESS_KEY": "ak", "COFFER_S3_SECRET_KEY": secret}, err: "COFFER_BACKUP_CONTAINER"},
		{name: "swift tempauth", env: map[string]string{"COFFER_BACKUP_STORE": "swift", "COFFER_SWIFT_AUTH_URL": "http://swift:8080/auth/v1.0", "COFFER_SWIFT_USER": "test:tester", "COFFER_SWIFT_KEY": secret, "COFFER_SWIFT_TEMPURL_KEY": "tk"},
			want: func(c objectstore.Config) bool {
				return c.Kind == "swift" && c.Container == "database_backups" && c.Swift.Auth == "tempauth" && c.Swift.User == "test:tester" &&
					string(c.Swift.Key) == secret && string(c.Swift.TempURLKey) == "tk"
			}},
		{name: "swift no key", env: map[string]string{"COFFER_BACKUP_STORE": "swift", "COFFER_SWIFT_AUTH_URL": "http://swift:8080/auth/v1.0", "COFFER_SWIFT_USER": "test:tester"}, err: "COFFER_SWIFT_KEY"},
		{name: "swift bad auth URL", env: map[string]string{"COFFER_BACKUP_STORE": "swift", "COFFER_SWIFT_AUTH_URL": "http://swift:8080/v3", "COFFER_SWIFT_USER": "u", "COFFER_SWIFT_KEY": secret}, err: "COFFER_SWIFT_AUTH_URL"},
		{name: "swift unknown auth", env: map[string]string{"COFFER_BACKUP_STORE": "swift", "COFFER_SWIFT_AUTH": "oauth"}, err: "COFFER_SWIFT_AUTH"},
		{name: "swift keystone", env: map[string]string{"COFFER_BACKUP_STORE": "swift", "COFFER_SWIFT_AUTH": "keystone", "COFFER_KEYSTONE_URL": "http://ks:5000/v3", "COFFER_KEYSTONE_USERNAME": "coffer", "COFFER_KEYSTONE_PASSWORD": secret, "COFFER_KEYSTONE_PROJECT_NAME": "service", "COFFER_REGION": "R2"},
			want: func(c objectstore.Config) bool {
				k := c.Swift.Keystone
				return c.Swift.Auth == "keystone" && k.AuthURL == "http://ks:5000/v3" && k.Username == "coffer" && string(k.Password) == secret &&
					k.ProjectName == "service" && k.UserDomainName == "Default" && k.ProjectDomainName == "Default" && c.Swift.Region == "R2"
			}},
		{name: "swift keystone no password", env: map[string]string{"COFFER_BACKUP_STORE": "swift", "COFFER_SWIFT_AUTH": "keystone", "COFFER_KEYSTONE_URL": "http://ks:5000/v3", "COFFER_KEYSTONE_USERNAME": "coffer", "COFFER_KEYSTONE_PROJECT_NAME": "service"}, err: "COFFER_KEYSTONE_PASSWORD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := objectstore.FromEnvFunc("/data", func(k string) string { return tc.env[k] })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want one naming %s", err, tc.err)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error holds a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Errorf("config = %+v", c)
			}
			// Secrets stay out of every way of printing the config.
			var logged strings.Builder
			slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "config", c, "s3", c.S3, "key", c.Swift.Key)
			for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), logged.String()} {
				if strings.Contains(s, secret) {
					t.Errorf("a printed config holds the secret: %s", s)
				}
			}
		})
	}
}

package objectstore

import (
	"fmt"
	"os"
	"strings"
)

// CopyStoresFromEnv reads COFFER_BACKUP_COPY_STORES: a comma-separated list
// of store kinds (file, s3, swift) that backups may be copied to, each
// configured by the same variables as the default store of that kind
// (COFFER_BACKUP_FILE_DIR, COFFER_S3_*, COFFER_SWIFT_*). Each is named by
// its kind; def is the default store's configuration (FromEnv), which a
// copy store may not repeat. Unset: no copy stores.
func CopyStoresFromEnv(dataDir string, def Config) ([]Config, error) {
	return copyStoresFromEnv(dataDir, def, os.Getenv)
}

func copyStoresFromEnv(dataDir string, def Config, getenv func(string) string) ([]Config, error) {
	v := strings.TrimSpace(getenv("COFFER_BACKUP_COPY_STORES"))
	if v == "" {
		return nil, nil
	}
	var out []Config
	seen := map[string]bool{def.Name: true}
	for _, kind := range strings.Split(v, ",") {
		kind = strings.TrimSpace(kind)
		switch kind {
		case "file", "s3", "swift":
		default:
			return nil, fmt.Errorf("COFFER_BACKUP_COPY_STORES: %q is not supported (supported: file, s3, swift)", kind)
		}
		if seen[kind] {
			return nil, fmt.Errorf("COFFER_BACKUP_COPY_STORES: %q is listed twice or is the default store (COFFER_BACKUP_STORE)", kind)
		}
		seen[kind] = true
		c, err := fromEnv(dataDir, func(key string) string {
			if key == "COFFER_BACKUP_STORE" {
				return kind
			}
			return getenv(key)
		})
		if err != nil {
			return nil, fmt.Errorf("COFFER_BACKUP_COPY_STORES %s: %w", kind, err)
		}
		out = append(out, c)
	}
	return out, nil
}

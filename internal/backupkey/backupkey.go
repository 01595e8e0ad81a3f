// Package backupkey holds the keys that encrypt backups, in three levels:
// a master key the platform holds outside the database (the environment, or
// a file only its owner can read), a key per project stored wrapped by the
// master key (table project_key), and a random data key per backup stored
// wrapped by its project's key (backup.wrapped_key). No key is ever stored
// in plain text, and none next to the data in object storage: a copy of the
// database alone, or of the bucket alone, decrypts nothing.
//
// Wrapping is AES-256-GCM with a random nonce and the owner's id as
// additional data (the project id for a project key, the backup id for a
// data key), so a wrapped key copied onto another row does not unwrap.
package backupkey

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
)

// KeySize is the size of every key: AES-256.
const KeySize = 32

// EnvMasterKey holds the master key, base64 (standard or URL alphabet).
const EnvMasterKey = "COFFER_BACKUP_MASTER_KEY"

// MasterKeyFile is the master key's file name in the data directory when
// EnvMasterKey is not set (the embedded default).
const MasterKeyFile = "backup-master.key"

// wrapVersion prefixes every wrapped key, so the format can change.
const wrapVersion = 1

// Keyring wraps and unwraps project and data keys. It is safe for
// concurrent use.
type Keyring struct {
	master cipher.AEAD
}

// New returns a keyring over a 32-byte master key.
func New(master []byte) (*Keyring, error) {
	aead, err := newAEAD(master)
	if err != nil {
		return nil, fmt.Errorf("backup master key: %w", err)
	}
	return &Keyring{master: aead}, nil
}

// FromEnv returns the keyring of EnvMasterKey, or else of the master key
// file in dataDir, which is created (mode 0600) on first use.
func FromEnv(dataDir string) (*Keyring, error) {
	if v := strings.TrimSpace(os.Getenv(EnvMasterKey)); v != "" {
		key, err := decodeKey(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvMasterKey, err)
		}
		return New(key)
	}
	key, err := LoadOrCreateFile(filepath.Join(dataDir, MasterKeyFile))
	if err != nil {
		return nil, err
	}
	return New(key)
}

// LoadOrCreateFile reads a master key file (base64), creating it with a
// random key first if it does not exist. Creation is exclusive (a hard
// link of a complete temporary file), so processes starting together
// agree on one key. A file others can read is refused: it decrypts every
// backup.
func LoadOrCreateFile(path string) ([]byte, error) {
	if err := createKeyFile(path); err != nil {
		return nil, err
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("backup master key: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("backup master key %s is accessible by group or others (mode %04o): chmod 600 it", path, info.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backup master key: %w", err)
	}
	key, err := decodeKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("backup master key %s: %w", path, err)
	}
	return key, nil
}

func createKeyFile(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("backup master key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("backup master key: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("backup master key: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create backup master key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create backup master key: %w", err)
	}
	// Link, unlike rename, fails when path exists: a key another process
	// created meanwhile wins and is the one read.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create backup master key: %w", err)
	}
	return nil
}

func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("want %d bytes (base64), got %d", KeySize, len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// ProjectKey is a project's unwrapped key. It never leaves the process.
type ProjectKey struct {
	// ID names the key in manifests and on backups.
	ID        uuid.UUID
	ProjectID string
	aead      cipher.AEAD
}

// ProjectKey returns a project's key, creating it on first use. Safe when
// several transactions ask at once for a project that has none: one
// insert wins, every caller reads the winner. q may be bound to a
// transaction (the key is then created with it) or to the pool.
func (k *Keyring) ProjectKey(ctx context.Context, q *store.Queries, projectID string) (*ProjectKey, error) {
	row, err := q.GetProjectKey(ctx, projectID)
	if errors.Is(err, pgx.ErrNoRows) {
		key := make([]byte, KeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("project key of %s: %w", projectID, err)
		}
		wrapped, werr := wrap(k.master, key, []byte(projectID))
		if werr != nil {
			return nil, fmt.Errorf("project key of %s: %w", projectID, werr)
		}
		if err := q.InsertProjectKey(ctx, store.InsertProjectKeyParams{
			ProjectID: projectID, KeyID: uuid.New(), WrappedKey: wrapped,
		}); err != nil {
			return nil, fmt.Errorf("project key of %s: store: %w", projectID, err)
		}
		row, err = q.GetProjectKey(ctx, projectID)
	}
	if err != nil {
		return nil, fmt.Errorf("project key of %s: load: %w", projectID, err)
	}
	key, err := unwrap(k.master, row.WrappedKey, []byte(projectID))
	if err != nil {
		return nil, fmt.Errorf("project key of %s: %w (wrong %s?)", projectID, err, EnvMasterKey)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("project key of %s: %w", projectID, err)
	}
	return &ProjectKey{ID: row.KeyID, ProjectID: projectID, aead: aead}, nil
}

// NewDataKey returns a fresh random data key for a backup, in plain (for
// the agent, never stored) and wrapped by the project key (for the row).
func (k *Keyring) NewDataKey(pk *ProjectKey, backupID uuid.UUID) (plain, wrapped []byte, err error) {
	plain = make([]byte, KeySize)
	if _, err := rand.Read(plain); err != nil {
		return nil, nil, fmt.Errorf("data key of backup %s: %w", backupID, err)
	}
	wrapped, err = wrap(pk.aead, plain, []byte(backupID.String()))
	if err != nil {
		return nil, nil, fmt.Errorf("data key of backup %s: %w", backupID, err)
	}
	return plain, wrapped, nil
}

// Unwrap returns a backup's plain data key from its wrapped form. It fails
// when the wrapped key was altered, belongs to another backup or was
// wrapped by another project's key.
func (k *Keyring) Unwrap(pk *ProjectKey, backupID uuid.UUID, wrapped []byte) ([]byte, error) {
	plain, err := unwrap(pk.aead, wrapped, []byte(backupID.String()))
	if err != nil {
		return nil, fmt.Errorf("data key of backup %s: %w", backupID, err)
	}
	return plain, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// wrap seals key: version byte, random nonce, ciphertext and tag.
func wrap(aead cipher.AEAD, key, ad []byte) ([]byte, error) {
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(key)+aead.Overhead())
	out[0] = wrapVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:], key, ad), nil
}

var errUnwrap = errors.New("wrapped key does not authenticate (altered, or not wrapped for this owner)")

func unwrap(aead cipher.AEAD, wrapped, ad []byte) ([]byte, error) {
	n := aead.NonceSize()
	if len(wrapped) < 1+n+aead.Overhead() || wrapped[0] != wrapVersion {
		return nil, errUnwrap
	}
	plain, err := aead.Open(nil, wrapped[1:1+n], wrapped[1+n:], ad)
	if err != nil {
		return nil, errUnwrap
	}
	if len(plain) != KeySize {
		return nil, errUnwrap
	}
	return plain, nil
}

package backupkey_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, backupkey.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestMasterKeyFileCreatedOnceAndPrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, backupkey.MasterKeyFile)
	// Several processes starting together agree on one key.
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := backupkey.LoadOrCreateFile(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) || len(k) != backupkey.KeySize {
			t.Fatalf("concurrent creation gave different keys")
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", info.Mode().Perm())
	}
	again, err := backupkey.LoadOrCreateFile(path)
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Fatalf("reload: %v, same key %v", err, bytes.Equal(again, keys[0]))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := backupkey.LoadOrCreateFile(path); err == nil {
		t.Error("a world-readable key file was accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "short.key"), []byte(base64.StdEncoding.EncodeToString([]byte("short"))), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := backupkey.LoadOrCreateFile(filepath.Join(dir, "short.key")); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

func TestFromEnv(t *testing.T) {
	key := randomKey(t)
	t.Setenv(backupkey.EnvMasterKey, base64.StdEncoding.EncodeToString(key))
	dir := t.TempDir()
	if _, err := backupkey.FromEnv(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, backupkey.MasterKeyFile)); err == nil {
		t.Error("a key file was written although the environment holds the key")
	}
	t.Setenv(backupkey.EnvMasterKey, "not base64 !!")
	if _, err := backupkey.FromEnv(dir); err == nil {
		t.Error("a malformed key was accepted")
	}
	t.Setenv(backupkey.EnvMasterKey, "")
	if _, err := backupkey.FromEnv(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, backupkey.MasterKeyFile)); err != nil {
		t.Errorf("no key file created: %v", err)
	}
}

func newProject(t *testing.T, q *store.Queries, id string) {
	t.Helper()
	if _, err := q.UpsertProject(context.Background(), store.UpsertProjectParams{ID: id, Name: id}); err != nil {
		t.Fatal(err)
	}
}

func TestProjectAndDataKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	q := store.New(pool)
	newProject(t, q, "p1")
	newProject(t, q, "p2")
	ring, err := backupkey.New(randomKey(t))
	if err != nil {
		t.Fatal(err)
	}

	// Concurrent first use, each in its own transaction: one key.
	ids := make([]uuid.UUID, 6)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				pk, err := ring.ProjectKey(ctx, store.New(tx), "p1")
				if err == nil {
					ids[i] = pk.ID
				}
				return err
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Fatalf("concurrent first use made several keys: %v", ids)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM project_key").Scan(&n); err != nil || n != 1 {
		t.Fatalf("project_key rows: %d %v", n, err)
	}

	pk1, err := ring.ProjectKey(ctx, q, "p1")
	if err != nil {
		t.Fatal(err)
	}
	backup := uuid.New()
	plain, wrapped, err := ring.NewDataKey(pk1, backup)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != backupkey.KeySize || bytes.Contains(wrapped, plain) {
		t.Fatalf("data key %d bytes; wrapped form contains it: %v", len(plain), bytes.Contains(wrapped, plain))
	}
	got, err := ring.Unwrap(pk1, backup, wrapped)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("unwrap: %v", err)
	}
	// The stored project key is wrapped too.
	var storedProject []byte
	if err := pool.QueryRow(ctx, "SELECT wrapped_key FROM project_key WHERE project_id = 'p1'").Scan(&storedProject); err != nil {
		t.Fatal(err)
	}
	if len(storedProject) <= backupkey.KeySize {
		t.Errorf("stored project key is %d bytes: not wrapped", len(storedProject))
	}

	// Another backup's id, another project's key, a flipped bit, a cut
	// key: none unwraps.
	if _, err := ring.Unwrap(pk1, uuid.New(), wrapped); err == nil {
		t.Error("unwrapped with another backup's id")
	}
	pk2, err := ring.ProjectKey(ctx, q, "p2")
	if err != nil {
		t.Fatal(err)
	}
	if pk2.ID == pk1.ID {
		t.Error("two projects share a key id")
	}
	if _, err := ring.Unwrap(pk2, backup, wrapped); err == nil {
		t.Error("unwrapped with another project's key")
	}
	for i := range wrapped {
		bad := bytes.Clone(wrapped)
		bad[i] ^= 0x01
		if _, err := ring.Unwrap(pk1, backup, bad); err == nil {
			t.Fatalf("tampered byte %d went unnoticed", i)
		}
	}
	if _, err := ring.Unwrap(pk1, backup, wrapped[:len(wrapped)-1]); err == nil {
		t.Error("cut wrapped key unwrapped")
	}
	if _, err := ring.Unwrap(pk1, backup, nil); err == nil {
		t.Error("empty wrapped key unwrapped")
	}

	// A project key copied onto another project's row does not unwrap
	// (AAD = project id), nor does any key with another master key.
	if _, err := pool.Exec(ctx, "UPDATE project_key SET wrapped_key = $1 WHERE project_id = 'p2'", storedProject); err != nil {
		t.Fatal(err)
	}
	if _, err := ring.ProjectKey(ctx, q, "p2"); err == nil {
		t.Error("p1's wrapped key unwrapped as p2's")
	}
	other, _ := backupkey.New(randomKey(t))
	if _, err := other.ProjectKey(ctx, q, "p1"); err == nil {
		t.Error("another master key unwrapped p1's key")
	}
	if _, err := backupkey.New([]byte("short")); err == nil {
		t.Error("a short master key was accepted")
	}
}

package objectstore_test

import (
	"strings"
	"testing"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
)

func TestCopyStoresFromEnv(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	base := map[string]string{"COFFER_S3_ENDPOINT": "http://minio:9000", "COFFER_S3_ACCESS_KEY": "a", "COFFER_S3_SECRET_KEY": "s3cret"}
	def, err := objectstore.FromEnvFunc("/data", env(base))
	if err != nil {
		t.Fatal(err)
	}
	// Unset: none, and the default store is unchanged.
	if cs, err := objectstore.CopyStoresFromEnvFunc("/data", def, env(base)); err != nil || len(cs) != 0 {
		t.Fatalf("unset: %v %v", cs, err)
	}
	with := func(v string) map[string]string {
		m := map[string]string{"COFFER_BACKUP_COPY_STORES": v}
		for k, x := range base {
			m[k] = x
		}
		return m
	}
	cs, err := objectstore.CopyStoresFromEnvFunc("/data", def, env(with(" s3 ")))
	if err != nil || len(cs) != 1 || cs[0].Name != "s3" || cs[0].Kind != "s3" || cs[0].S3.Endpoint != "minio:9000" || cs[0].Container != objectstore.DefaultS3Container {
		t.Fatalf("s3 copy store: %+v %v", cs, err)
	}
	for v, want := range map[string]string{
		"file":    "is the default store",
		"s3,s3":   "listed twice",
		"tape":    `"tape" is not supported`,
		"swift":   "COFFER_SWIFT_AUTH_URL",
		"s3,,":    `"" is not supported`,
		"s3,file": "is the default store",
	} {
		_, err := objectstore.CopyStoresFromEnvFunc("/data", def, env(with(v)))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("COFFER_BACKUP_COPY_STORES=%s: %v, want %q", v, err, want)
		}
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	a, _ := objectstore.NewFile(t.TempDir(), "")
	b, _ := objectstore.NewFile(t.TempDir(), "")
	r, err := objectstore.NewRegistry(objectstore.Location{Name: "file", Container: "c", Store: a}, objectstore.Location{Name: "s3", Container: "d", Store: b})
	if err != nil {
		t.Fatal(err)
	}
	if l, ok := r.Get("s3"); !ok || l.Store != b || l.Container != "d" {
		t.Errorf("Get(s3): %+v %v", l, ok)
	}
	if l, ok := r.Get("file"); !ok || l.Store != a {
		t.Errorf("Get(file): %+v %v", l, ok)
	}
	if _, ok := r.Get("swift"); ok {
		t.Error("Get(swift) found a location")
	}
	if got := strings.Join(r.Names(), ","); got != "file,s3" {
		t.Errorf("Names: %s", got)
	}
	if _, err := objectstore.NewRegistry(objectstore.Location{Name: "file", Store: a}, objectstore.Location{Name: "file", Store: b}); err == nil {
		t.Error("a duplicate name was accepted")
	}
	var none *objectstore.Registry
	if _, ok := none.Get("file"); ok || none.Names() != nil {
		t.Error("a nil registry has locations")
	}
}

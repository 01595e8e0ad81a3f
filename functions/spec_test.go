package functions_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/coffer-dbaas/coffer/functions"
)

// The committed OpenAPI documents must be what the handlers define.
// Regenerate with `go tool task gen`.
func TestOpenAPIDocumentsUpToDate(t *testing.T) {
	t.Parallel()
	spec := functions.Spec()
	v31, err := spec.YAML()
	if err != nil {
		t.Fatal(err)
	}
	v30, err := spec.DowngradeYAML()
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string][]byte{"../openapi/openapi.yaml": v31, "../openapi/openapi-3.0.yaml": v30} {
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%s: %v (run `go tool task gen`)", file, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `go tool task gen` and commit it", file)
		}
	}
}

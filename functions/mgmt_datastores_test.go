package functions_test

import (
	"context"
	"strings"
	"testing"
)

func TestMgmtDatastoreVersions(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := "/v1.0/" + f.projectA
	mgmt := a + "/mgmt/datastore-versions"
	const image = "0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e90"

	// Members: Trove's 401 on every management route, 403 on datastore delete.
	for _, c := range []struct{ method, path, body string }{
		{"GET", mgmt, ""},
		{"POST", mgmt, `{"version": {"name": "16", "datastore_name": "postgresql", "datastore_manager": "postgresql", "active": true, "image": "` + image + `"}}`},
		{"GET", mgmt + "/" + image, ""},
		{"PATCH", mgmt + "/" + image, `{"active": false}`},
		{"DELETE", mgmt + "/" + image, ""},
	} {
		code, body := f.do(t, c.method, c.path, f.tokenA, c.body)
		if code != 401 {
			t.Errorf("member %s %s: %d", c.method, c.path, code)
			continue
		}
		if msg := fault(t, body, "unauthorized", 401); msg != "User does not have admin privileges." {
			t.Errorf("message %q", msg)
		}
	}
	code, body := f.do(t, "DELETE", a+"/datastores/redis", f.tokenA, "")
	if code != 403 {
		t.Errorf("member deletes a datastore: %d", code)
	}
	fault(t, body, "forbidden", 403)

	// Bad input.
	for _, c := range []struct{ body, want string }{
		{`{"version": {"name": "16", "datastore_name": "postgresql", "datastore_manager": "postgresql", "active": true}}`, "image"},
		{`{"version": {"name": "16", "datastore_name": "postgresql", "datastore_manager": "postgresql", "active": true, "image": "x"}}`, "image"},
		{`{"version": {"name": "16", "datastore_name": "postgresql", "datastore_manager": "oracle", "active": true, "image": "` + image + `"}}`, "oracle"},
		{`{"version": {"name": "16", "datastore_name": "postgresql", "datastore_manager": "postgresql", "image": "` + image + `"}}`, "active"},
		{`{"version": {"name": "16", "datastore_name": "postgresql", "datastore_manager": "postgresql", "active": true, "image": "` + image + `", "colour": "red"}}`, "colour"},
		{`{"version": {"name": "16", "datastore_name": "postgresql", "datastore_manager": "postgresql", "active": true, "image_tags": ["a-very-long-image-tag-name"]}}`, "20 characters"},
		{`{"version": {"name": "15", "datastore_name": "postgresql", "datastore_manager": "postgresql", "active": true, "image": "` + image + `"}}`, "already exists"},
	} {
		code, body := f.do(t, "POST", mgmt, f.admin, c.body)
		if code != 400 {
			t.Errorf("%s: %d %v", c.body, code, body)
			continue
		}
		if msg := fault(t, body, "badRequest", 400); !strings.Contains(msg, c.want) {
			t.Errorf("%s: message %q, want %q", c.body, msg, c.want)
		}
	}

	// Create (OSC's body), in a new datastore too.
	code, body = f.do(t, "POST", mgmt, f.admin, `{"version": {"name": "16", "datastore_name": "postgresql", "datastore_manager": "postgresql",
		"image_tags": [], "packages": [], "active": true, "default": false, "image": "`+image+`", "version": "16.4"}}`)
	if code != 202 || body != nil {
		t.Fatalf("create: %d %v", code, body)
	}
	code, body = f.do(t, "POST", mgmt, f.admin, `{"version": {"name": "1.0", "datastore_name": "newdb", "datastore_manager": "redis",
		"image_tags": ["redis"], "active": false, "default": true}}`)
	if code != 202 {
		t.Fatalf("create in a new datastore: %d %v", code, body)
	}
	code, body = f.do(t, "GET", mgmt, f.admin, "")
	if code != 200 {
		t.Fatalf("list: %d %v", code, body)
	}
	var pg16, newdb map[string]any
	for _, v := range body["versions"].([]any) {
		m := v.(map[string]any)
		switch {
		case m["datastore_name"] == "postgresql" && m["name"] == "16":
			pg16 = m
		case m["datastore_name"] == "newdb":
			newdb = m
		}
	}
	if pg16 == nil || pg16["version"] != "16.4" || pg16["image"] != image || pg16["active"] != true || pg16["default"] != false ||
		pg16["datastore_manager"] != "postgresql" || len(pg16["image_tags"].([]any)) != 1 || pg16["image_tags"].([]any)[0] != "" {
		t.Errorf("pg16 = %v", pg16)
	}
	if newdb == nil || newdb["default"] != true || newdb["active"] != false || newdb["image_tags"].([]any)[0] != "redis" {
		t.Errorf("newdb = %v", newdb)
	}
	id := pg16["id"].(string)
	// A PostgreSQL version has configuration parameters at once.
	if code, body = f.do(t, "GET", a+"/datastores/versions/"+id+"/parameters/work_mem", f.tokenA, ""); code != 200 {
		t.Errorf("parameters of the new version: %d %v", code, body)
	}
	if code, body = f.do(t, "GET", mgmt+"/"+id, f.admin, ""); code != 200 || body["version"].(map[string]any)["name"] != "16" {
		t.Errorf("show: %d %v", code, body)
	}

	// PATCH: flat body; default moves the datastore's default.
	for _, bad := range []string{`{"colour": "red"}`, `{"image": "x"}`, `{"active": "yes"}`, `{"version": {"active": false}}`} {
		if code, body := f.do(t, "PATCH", mgmt+"/"+id, f.admin, bad); code != 400 {
			t.Errorf("patch %s: %d %v", bad, code, body)
		}
	}
	if code, body = f.do(t, "PATCH", mgmt+"/"+id, f.admin, `{"name": "16-main", "default": true, "image_tags": ["pg", "16"], "active": false}`); code != 202 {
		t.Fatalf("patch: %d %v", code, body)
	}
	code, body = f.do(t, "GET", mgmt+"/"+id, f.admin, "")
	v := body["version"].(map[string]any)
	if v["name"] != "16-main" || v["default"] != true || v["active"] != false || len(v["image_tags"].([]any)) != 2 || v["image"] != image {
		t.Errorf("after patch: %v", v)
	}
	var def string
	if err := f.pool.QueryRow(context.Background(), "SELECT default_version_id::text FROM datastore WHERE name = 'postgresql'").Scan(&def); err != nil || def != id {
		t.Errorf("datastore default = %s %v, want %s", def, err, id)
	}
	if code, body = f.do(t, "PATCH", mgmt+"/"+id, f.admin, `{"default": false, "active": true}`); code != 202 {
		t.Fatalf("patch back: %d %v", code, body)
	}
	if _, body = f.do(t, "GET", mgmt+"/"+id, f.admin, ""); body["version"].(map[string]any)["default"] != false {
		t.Errorf("still default: %v", body)
	}

	// In use → 400; unused → deleted with its parameters.
	if code, body = f.do(t, "POST", a+"/configurations", f.tokenA, `{"configuration": {"name": "g", "values": {"work_mem": "1MB"},
		"datastore": {"type": "postgresql", "version": "16-main"}}}`); code != 200 {
		t.Fatalf("group on the new version: %d %v", code, body)
	}
	gid := body["configuration"].(map[string]any)["id"].(string)
	code, body = f.do(t, "DELETE", mgmt+"/"+id, f.admin, "")
	if code != 400 || !strings.Contains(fault(t, body, "badRequest", 400), "in use") {
		t.Errorf("delete in use: %d %v", code, body)
	}
	if code, _ = f.do(t, "DELETE", a+"/configurations/"+gid, f.tokenA, ""); code != 202 {
		t.Fatal("delete group")
	}
	if code, body = f.do(t, "DELETE", mgmt+"/"+id, f.admin, ""); code != 202 || body != nil {
		t.Errorf("delete: %d %v", code, body)
	}
	if code, _ = f.do(t, "GET", mgmt+"/"+id, f.admin, ""); code != 400 {
		t.Errorf("show deleted: %d", code)
	}
	if code, _ = f.do(t, "GET", a+"/datastores/versions/"+id+"/parameters", f.tokenA, ""); code != 400 {
		t.Errorf("parameters of a deleted version: %d", code)
	}

	// A datastore with versions cannot be deleted; an empty one can.
	code, body = f.do(t, "DELETE", a+"/datastores/newdb", f.admin, "")
	if code != 400 {
		t.Errorf("delete datastore with versions: %d %v", code, body)
	}
	fault(t, body, "badRequest", 400)
	if code, _ = f.do(t, "DELETE", mgmt+"/"+newdb["id"].(string), f.admin, ""); code != 202 {
		t.Fatalf("delete newdb version: %d", code)
	}
	if code, body = f.do(t, "DELETE", a+"/datastores/newdb", f.admin, ""); code != 202 {
		t.Errorf("delete empty datastore: %d %v", code, body)
	}
	if code, _ = f.do(t, "GET", a+"/datastores/newdb", f.admin, ""); code != 404 {
		t.Errorf("show deleted datastore: %d", code)
	}
	if code, _ = f.do(t, "DELETE", a+"/datastores/newdb", f.admin, ""); code != 404 {
		t.Errorf("delete it again: %d", code)
	}
}

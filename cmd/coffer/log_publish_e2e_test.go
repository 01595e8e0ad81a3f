package main_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/objects"

	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// publishGuestLogs drives guest log publishing through both CLIs once the
// region's catalog has a Swift (swift, with Keystone auth): `database log
// set --publish` and `trove log-publish` store the statement log in the
// user's own account, `log tail` / `log save` (and `trove log-tail` /
// `log-save`) read it back from there with the user's credentials, and
// `trove log-discard` removes it. What was published is checked against
// the server log on the instance's volume byte for byte, object by object
// (X-Object-Meta-Lines, expiry), and read with the user's token straight
// from Swift. The statement log is enabled and serverLog is its file.
func publishGuestLogs(t *testing.T, c *keystoneCoffer, swift *objectstoretest.Server, id, serverLog string, query func(string, ...any)) {
	t.Helper()
	member, alt := c.demo, c.alt
	storage := swift.Env["SWIFT_KEYSTONE_STORAGE_URL"]
	c.ks.RegisterEndpoint(t, c.region, "object-store", "swift", storage+"$(project_id)s")
	prefix := id + "/postgresql-general/"

	// Statements to find again; the log ends with the last one.
	marker := func(n int) string { return fmt.Sprintf("coffer-publish-marker-%d", n) }
	logged := func(n int) {
		t.Helper()
		acctEventually(t, "statement "+marker(n)+" in the server log", func() error {
			b, err := os.ReadFile(serverLog)
			if err == nil && !bytes.Contains(b, []byte("statement: SELECT '"+marker(n)+"'")) {
				err = fmt.Errorf("not in %d bytes", len(b))
			}
			return err
		})
	}
	for n := 1; n <= 40; n++ {
		query(fmt.Sprintf("SELECT '%s'", marker(n)))
	}
	logged(40)

	// What Swift holds under the log's prefix, in the order `log save`
	// concatenates it (the objects' names are their UTC times).
	sc := &gophercloud.ServiceClient{ProviderClient: &gophercloud.ProviderClient{}, Endpoint: gophercloud.NormalizeURL(storage + c.creds.ProjectID)}
	sc.ProviderClient.SetToken(c.creds.MemberToken)
	stored := func() (string, []string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pages, err := objects.List(sc, "database_logs", objects.ListOpts{Prefix: prefix}).AllPages(ctx)
		if err != nil {
			t.Fatalf("list database_logs: %v", err)
		}
		names, err := objects.ExtractNames(pages)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(names)
		var all strings.Builder
		for _, name := range names {
			r := objects.Download(ctx, sc, "database_logs", name, nil)
			body, err := r.ExtractContent()
			if err != nil {
				t.Fatalf("download %s: %v", name, err)
			}
			h := r.Header
			if lines, _ := strconv.Atoi(h.Get("X-Object-Meta-Lines")); lines != bytes.Count(body, []byte("\n")) || h.Get("X-Delete-At") == "" {
				t.Errorf("%s: X-Object-Meta-Lines %q for %d lines, X-Delete-At %q", name, h.Get("X-Object-Meta-Lines"), bytes.Count(body, []byte("\n")), h.Get("X-Delete-At"))
			}
			if len(body) > 1<<20 {
				t.Errorf("%s: %d bytes, more than guest_log_limit", name, len(body))
			}
			all.Write(body)
		}
		return all.String(), names
	}
	// checkPublished: the API's published size is what Swift holds, and
	// that is the server log's start, complete lines only.
	checkPublished := func(what string, l map[string]any) string {
		t.Helper()
		published, _ := l["published"].(float64)
		if l["container"] != "database_logs" || l["prefix"] != prefix || published <= 0 ||
			(l["status"] != "Published" && l["status"] != "Partial") {
			t.Fatalf("%s = %v", what, l)
		}
		content, names := stored()
		file, err := os.ReadFile(serverLog)
		if err != nil {
			t.Fatal(err)
		}
		if float64(len(content)) != published || !bytes.HasPrefix(file, []byte(content)) || !strings.HasSuffix(content, "\n") {
			t.Fatalf("%s: Swift holds %d bytes in %d objects (published %v): not the server log's first complete lines", what, len(content), len(names), published)
		}
		return content
	}
	lastLines := func(content string, n int) string {
		lines := strings.Split(strings.TrimSuffix(content, "\n"), "\n")
		return strings.Join(lines[len(lines)-n:], "\n") + "\n"
	}

	var l map[string]any
	start := time.Now()
	c.oscJSON(t, member, &l, "database", "log", "set", id, "general", "--publish")
	took := time.Since(start)
	content := checkPublished("log set --publish", l)
	t.Logf("log set --publish: %d bytes in %.1fs (the CLI call)", len(content), took.Seconds())
	if !strings.Contains(content, "statement: SELECT '"+marker(40)+"'") {
		t.Fatalf("published log without the last statement")
	}
	_, metaErr := objects.Get(context.Background(), sc, "database_logs", id+"/postgresql-general_metafile", nil).Extract()
	if metaErr != nil {
		t.Errorf("metafile: %v", metaErr)
	}
	c.oscFails(t, alt, "No instance with a name or ID", "database", "log", "set", id, "general", "--publish")

	// Reading it back, from Swift, with the user's own credentials.
	out, err := c.try(member, "openstack", "database", "log", "tail", id, "general", "--lines", "3")
	if err != nil || out != lastLines(content, 3) {
		t.Errorf("log tail --lines 3: %v\n%q\nwant %q", err, out, lastLines(content, 3))
	}
	saved := filepath.Join(t.TempDir(), "general.log")
	if out, err := c.try(member, "openstack", "database", "log", "save", id, "general", "--file", saved); err != nil {
		t.Errorf("log save: %v\n%s", err, out)
	} else if b, _ := os.ReadFile(saved); string(b) != content {
		t.Errorf("log save wrote %d bytes, %d published", len(b), len(content))
	}

	// The legacy CLI publishes what was added since: a new object.
	query(fmt.Sprintf("SELECT '%s'", marker(41)))
	logged(41)
	_, before := stored()
	c.troveJSON(t, member, &l, "log-publish", id, "general")
	more := checkPublished("trove log-publish", l)
	if _, after := stored(); len(more) <= len(content) || !strings.Contains(more[len(content):], marker(41)) || len(after) <= len(before) {
		t.Errorf("trove log-publish: %d → %d bytes, %d → %d objects", len(content), len(more), len(before), len(after))
	}
	if out, err := c.try(member, "trove", "log-tail", id, "general", "--lines", "1"); err != nil || out != lastLines(more, 1) {
		t.Errorf("trove log-tail --lines 1: %v\n%q\nwant %q", err, out, lastLines(more, 1))
	}
	if out, err := c.try(member, "trove", "log-save", id, "general", "--file", saved); err != nil {
		t.Errorf("trove log-save: %v\n%s", err, out)
	} else if b, _ := os.ReadFile(saved); string(b) != more {
		t.Errorf("trove log-save wrote %d bytes, %d published", len(b), len(more))
	}

	// Discard: the objects and the metafile are gone, nothing published.
	c.troveJSON(t, member, &l, "log-discard", id, "general")
	if l["published"] != 0.0 || l["status"] != "Ready" || l["container"] != "None" {
		t.Errorf("trove log-discard = %v", l)
	}
	if rest, names := stored(); len(names) != 0 || rest != "" {
		t.Errorf("after discard Swift still holds %v", names)
	}
	if _, err := objects.Get(context.Background(), sc, "database_logs", id+"/postgresql-general_metafile", nil).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("metafile after discard: %v", err)
	}
}

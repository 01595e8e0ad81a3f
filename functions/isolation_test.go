package functions_test

// Two projects, every operation: project B's calls that name project A's
// resources find nothing (404) and change nothing, B's token never gets
// into A's URLs (403), and member tokens on admin routes get Trove's
// status. Operations come from the OpenAPI document, so a new route is
// covered (or, when the tables in fixture_test.go cannot fill it in, the
// tests fail until it is described there).

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"testing"
)

// ownProjectCreates are the operations that name no existing resource and
// create one in the caller's own project: nothing of another project is
// involved, so the isolation test does not call them (the bad-input tests
// do).
var ownProjectCreates = map[string]bool{"create-instance": true, "create-configuration": true}

// isolationCodes are the answers to project B's member that the rules in
// isolationWant do not give: B asking for A's quotas is refused (403), as
// Trove does for another project's quotas.
var isolationCodes = map[string]int{"show-quotas": http.StatusForbidden}

// isolationWant is what B's member gets for op with B's tenant and A's
// ids: 0 means the operation is not called (it creates in B's project),
// 200 a read of B's own (or the shared) data.
func isolationWant(op operation) (int, error) {
	if code, ok := isolationCodes[op.ID]; ok {
		return code, nil
	}
	if code, ok := isAdminOp(op); ok {
		return code, nil
	}
	switch {
	case op.has(owned):
		return http.StatusNotFound, nil
	case op.has(child), op.has(project):
		return 0, fmt.Errorf("%s: names a project's resource but no owned one; describe it in isolationCodes", op)
	case op.Method == http.MethodGet:
		return http.StatusOK, nil
	case ownProjectCreates[op.ID]:
		return 0, nil
	}
	return 0, fmt.Errorf("%s: a %s naming no resource: add it to ownProjectCreates, adminOnly or isolationCodes", op, op.Method)
}

func bodyBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

func hasTenant(op operation) bool { return slices.Contains(op.params(), "tenant_id") }

func TestTwoProjectsIsolation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	before := w.snapshot(t)
	// What B must never see.
	secrets := []string{w.instance, w.configuration, w.attached, w.projectA}
	var refused, reads, forbidden int
	for _, op := range specOperations(t) {
		if !hasTenant(op) {
			continue // "/" and "/v1.0/": nobody's resources
		}
		want, err := isolationWant(op)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, body := range w.bodies(t, op) {
			// B's token with A's tenant: refused before anything is read.
			r := w.send(t, op.Method, w.path(t, op, w.projectA, nil), w.tokenB, bodyBytes(body))
			if r.status != http.StatusForbidden {
				t.Errorf("%s with B's token in A's URL: %s, want 403", op, r)
			} else if err := faultProblem(r); err != nil {
				t.Errorf("%s with B's token in A's URL: %v", op, err)
			}
			forbidden++
			if want == 0 {
				continue
			}
			// B's token and tenant, A's ids.
			r = w.send(t, op.Method, w.path(t, op, w.projectB, nil), w.tokenB, bodyBytes(body))
			switch {
			case r.status != want:
				t.Errorf("%s by project B on A's resources: %s, want %d", op, r, want)
			case want == http.StatusOK:
				reads++
				for _, s := range secrets {
					if bytes.Contains(r.raw, []byte(s)) {
						t.Errorf("%s by project B shows project A's %s: %s", op, s, r)
					}
				}
			default:
				refused++
				if err := faultProblem(r); err != nil {
					t.Errorf("%s by project B: %v", op, err)
				}
			}
		}
	}
	t.Logf("project B: %d calls on A's resources refused, %d reads of its own or shared data without A's ids, %d calls in A's URLs forbidden",
		refused, reads, forbidden)
	if refused == 0 || forbidden == 0 {
		t.Fatal("no operation was checked")
	}
	w.unchanged(t, before, "project B's calls")
	if n := w.count(t, "agent_command"); n != len(before["agent_command"]) {
		t.Errorf("agent commands: %d, were %d", n, len(before["agent_command"]))
	}
}

func TestMemberTokensOnAdminRoutes(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	before := w.snapshot(t)
	n := 0
	check := func(what, method, path, body string, want int) {
		t.Helper()
		r := w.send(t, method, path, w.tokenA, bodyBytes(body))
		if r.status != want {
			t.Errorf("%s by a member: %s, want %d", what, r, want)
		} else if err := faultProblem(r); err != nil {
			t.Errorf("%s by a member: %v", what, err)
		}
		n++
	}
	for _, op := range specOperations(t) {
		want, admin := isAdminOp(op)
		if !admin {
			continue
		}
		for _, body := range w.bodies(t, op) {
			check(op.String(), op.Method, w.path(t, op, w.projectA, nil), body, want)
		}
	}
	a := "/v1.0/" + w.projectA
	// Admin-only by body or parameter: Trove's instance:reset_status policy
	// (403), and another project's quotas (403).
	check("reset_status", "POST", a+"/instances/"+w.instance+"/action", `{"reset_status": {}}`, http.StatusForbidden)
	check("show-quotas of another project", "GET", a+"/mgmt/quotas/"+w.projectB, "", http.StatusForbidden)
	t.Logf("%d admin-only calls by a member refused", n)
	w.unchanged(t, before, "a member's calls on admin routes")
}

// TestOperationTablesWork checks the tables the generic tests use: every
// operation, with the world's ids and each valid body, succeeds for its
// project (admins on admin routes). So a 404 for another project, or a 4xx
// for a bad body, is the check's doing, not a wrong id or body. A call that
// succeeds also shows up in the snapshot (or nothing would prove that
// "unchanged" can see a change).
func TestOperationTablesWork(t *testing.T) {
	t.Parallel()
	ops := specOperations(t)
	reads := newWorld(t)
	before := reads.snapshot(t)
	for _, op := range ops {
		if op.Method != http.MethodGet {
			continue
		}
		token := reads.tokenA
		if _, admin := isAdminOp(op); admin {
			token = reads.admin
		}
		r := reads.send(t, op.Method, reads.path(t, op, reads.projectA, nil), token, nil)
		if want, ok := successCodes[op.ID]; ok && r.status != want || !ok && r.status/100 != 2 {
			t.Errorf("%s: %s", op, r)
		}
	}
	reads.unchanged(t, before, "reads")
	for _, op := range ops {
		if op.Method == http.MethodGet {
			continue
		}
		n := 1
		if op.Body != nil {
			n = max(len(validBodies[op.ID]), 1) // none: w.bodies fails the subtest
		}
		for i := range n {
			t.Run(fmt.Sprintf("%s#%d", op.ID, i), func(t *testing.T) {
				t.Parallel()
				w := newWorld(t)
				token := w.tokenA
				if _, admin := isAdminOp(op); admin {
					token = w.admin
				}
				body := w.bodies(t, op)[i]
				before := w.snapshot(t)
				r := w.send(t, op.Method, w.path(t, op, w.projectA, nil), token, bodyBytes(body))
				want, ok := successCodes[op.ID]
				switch {
				case ok && r.status != want, !ok && r.status/100 != 2:
					t.Fatalf("%s %s: %s", op, body, r)
				case !ok && len(w.snapshot(t).diff(before)) == 0:
					t.Errorf("%s %s: %s but no row changed", op, body, r)
				}
			})
		}
	}
}

// TestOtherProjectsIDsInBodies: ids in a body are looked up in the
// caller's project too. B attaching A's configuration group to its own
// instance finds no such group.
func TestOtherProjectsIDsInBodies(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	b := "/v1.0/" + w.projectB + "/instances"
	code, body := w.do(t, "POST", b, w.tokenB, `{"instance": {"name": "b1", "flavorRef": "1", "volume": {"size": 1}}}`)
	if code != 200 {
		t.Fatalf("B's create: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	w.acctExec(t, `UPDATE instance SET task = 'NONE', compute_status = 'ACTIVE', service_status = 'healthy', heartbeat_at = now() WHERE id = $1`, id)
	before := w.snapshot(t)
	for _, method := range []string{"PUT", "PATCH"} {
		for _, group := range []string{w.configuration, w.attached} {
			r := w.send(t, method, b+"/"+id, w.tokenB, []byte(`{"instance": {"configuration": "`+group+`"}}`))
			if r.status != http.StatusNotFound {
				t.Errorf("%s B's instance with A's group: %s, want 404", method, r)
			} else if err := faultProblem(r); err != nil {
				t.Errorf("%s B's instance with A's group: %v", method, err)
			}
		}
	}
	w.unchanged(t, before, "attaching another project's group")
}

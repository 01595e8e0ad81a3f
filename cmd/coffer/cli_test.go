package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
	"github.com/coffer-dbaas/coffer/internal/seed"
)

// The conformance suite drives the all-in-one the way an OpenStack user
// drives Trove: the real `openstack` and `trove` CLIs (Debian's
// python3-openstackclient 6.0.0 and python3-troveclient 8.0.0),
// authenticated by password against a real Keystone, which hands them the
// `database` endpoint from its catalog; the all-in-one validates their
// tokens with that Keystone (COFFER_AUTH=keystone).
//
// One Keystone serves the whole test process (keystonetest.Start), and
// every all-in-one gets a catalog region of its own (its endpoints point at
// its port; COFFER_REGION names it, so instances report it): the CLIs of a
// test run with OS_REGION_NAME set to that region, so parallel tests with
// their own all-in-ones never see each other's endpoint — a cloud with one
// Trove per region (each region also lists Keystone itself, which
// `database quota show <project name>` needs). The alternatives were worse: one `database` service per
// all-in-one makes the service type ambiguous to keystoneauth, a single
// endpoint rewritten per test races between parallel tests, and one shared
// all-in-one would couple tests that count events, quotas and datastore
// versions of the whole control plane.

// keystoneCoffer is an all-in-one behind Keystone. The embedded coffer's
// direct-API helpers (api, waitStatus, ...) act as the Keystone project
// demo: its creds hold demo's project id and Keystone tokens of demo
// (member) and of admin (role admin on demo).
type keystoneCoffer struct {
	*coffer
	ks     *keystonetest.Keystone
	region string
	// demo has role member on project demo, alt role member on project
	// alt, admin role admin on project demo (Trove's admin: admin routes
	// with the project's own tenant id in the URL).
	demo, alt, admin keystonetest.User

	calls    atomic.Int64 // CLI invocations, for the test's summary
	callDur  atomic.Int64 // their total run time, ns
	queueDur atomic.Int64 // their total wait for one of cliSlots, ns
}

// startKeystoneCoffer starts an all-in-one validating tokens with this
// process's shared Keystone and registers it in a region of its own;
// extraEnv as for startCoffer.
func startKeystoneCoffer(t *testing.T, extraEnv ...string) *keystoneCoffer {
	t.Helper()
	requireCLIs(t)
	return startKeystoneCofferOn(t, keystonetest.Start(t), extraEnv...)
}

// startKeystoneCofferOn is startKeystoneCoffer with a given Keystone (one
// the test owns, to stop it).
func startKeystoneCofferOn(t *testing.T, ks *keystonetest.Keystone, extraEnv ...string) *keystoneCoffer {
	t.Helper()
	requireCLIs(t)
	cl := &keystoneCoffer{ks: ks, region: keystonetest.NewRegionID("coffer"), demo: ks.Demo, alt: ks.Alt, admin: projectAdmin(t, ks)}
	env := append(ks.CofferEnv(), "COFFER_REGION="+cl.region)
	cl.coffer = startCoffer(t, append(env, extraEnv...)...)
	ks.RegisterDatabaseRegion(t, cl.region, cl.url)
	cl.creds = seed.Credentials{ProjectID: cl.demo.ProjectID, ProjectName: cl.demo.ProjectName,
		MemberToken: ks.Token(t, cl.demo), AdminToken: ks.Token(t, cl.admin)}
	t.Cleanup(func() {
		if n := cl.calls.Load(); n > 0 {
			run := time.Duration(cl.callDur.Load()).Seconds()
			t.Logf("%d CLI calls: %.1f s running (%.2f s each), %.1f s waiting for a slot",
				n, run, run/float64(n), time.Duration(cl.queueDur.Load()).Seconds())
		}
	})
	return cl
}

var (
	projectAdminsMu sync.Mutex
	projectAdmins   = map[*keystonetest.Keystone]keystonetest.User{}
)

// projectAdmin is ks's user with role admin on project demo, created on
// first use (per Keystone, so once per test process for the shared one).
func projectAdmin(t *testing.T, ks *keystonetest.Keystone) keystonetest.User {
	t.Helper()
	projectAdminsMu.Lock()
	defer projectAdminsMu.Unlock()
	u, ok := projectAdmins[ks]
	if !ok {
		u = ks.NewUser(t, "demo-admin", ks.Demo, "admin")
		projectAdmins[ks] = u
	}
	return u
}

// requireCLIs skips (fails in CI) when the CLIs are not installed.
func requireCLIs(t *testing.T) {
	t.Helper()
	for _, cli := range []string{"openstack", "trove"} {
		if _, err := exec.LookPath(cli); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s CLI not installed (CI must install python3-openstackclient python3-troveclient)", cli)
			}
			t.Skipf("SKIPPING: %s CLI not installed; run `go tool task deps:test`", cli)
		}
	}
}

// cliTimeout bounds one CLI invocation (~1.5-3 s normally; minutes only
// if something hangs).
const cliTimeout = 5 * time.Minute

// cliSlots caps the CLI processes this test process runs at once, across
// parallel tests and together's checks: a call is mostly Python starting
// up (~1.3 s of CPU before it sends anything), so more processes than CPUs
// only make every call slower and starve the all-in-ones and instances the
// tests wait for. Measured for the package on 2 CPUs (-parallel 8): 2
// slots 194 s, 3 slots 162 s, 4 slots 162 s.
var cliSlots = make(chan struct{}, runtime.NumCPU()+1)

// exec runs argv (argv[0] is "openstack" or "trove") as u through the
// catalog of the all-in-one's region. It returns stdout, and an error that
// carries stderr (where both CLIs print the API's fault message).
func (cl *keystoneCoffer) exec(u keystonetest.User, argv ...string) (string, error) {
	return cl.execEnv(u, nil, argv...)
}

// execEnv is exec with more environment variables.
func (cl *keystoneCoffer) execEnv(u keystonetest.User, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(cl.ks.CLIEnvIn(u, cl.region), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	queued := time.Now()
	cliSlots <- struct{}{}
	start := time.Now()
	err := cmd.Run()
	<-cliSlots
	cl.calls.Add(1)
	cl.callDur.Add(int64(time.Since(start)))
	cl.queueDur.Add(int64(start.Sub(queued)))
	if err != nil {
		return stdout.String(), &cliError{argv: argv, user: u.Name, err: err, stdout: stdout.String(), stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// cliError is a CLI that exited non-zero; Error() holds its whole output,
// so tests match the message the user would see.
type cliError struct {
	argv           []string
	user           string
	err            error
	stdout, stderr string
}

func (e *cliError) Error() string {
	return fmt.Sprintf("%s as %s: %v\n%s%s", strings.Join(e.argv, " "), e.user, e.err, e.stdout, e.stderr)
}

// try runs argv as u and returns its output (stdout, plus stderr if it
// failed) and the error: for commands a test expects to fail.
func (cl *keystoneCoffer) try(u keystonetest.User, argv ...string) (string, error) {
	out, err := cl.exec(u, argv...)
	if err != nil {
		return err.Error(), err
	}
	return out, nil
}

// run runs argv as u and fails the test if it fails; it returns stdout.
func (cl *keystoneCoffer) run(t testing.TB, u keystonetest.User, argv ...string) string {
	t.Helper()
	out, err := cl.exec(u, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// osc runs `openstack args...` as u (must succeed) and returns stdout.
func (cl *keystoneCoffer) osc(t testing.TB, u keystonetest.User, args ...string) string {
	t.Helper()
	return cl.run(t, u, append([]string{"openstack"}, args...)...)
}

// oscJSON runs `openstack args... -f json` as u and decodes its output
// into v (a map for show-style commands, a slice of maps for lists, keyed
// by the column titles).
func (cl *keystoneCoffer) oscJSON(t testing.TB, u keystonetest.User, v any, args ...string) {
	t.Helper()
	decodeCLI(t, cl.osc(t, u, append(args, "-f", "json")...), v, "openstack", args)
}

// troveJSON runs `trove --json args...` as u and decodes its output (the
// legacy CLI's tables print bytes literals under Python 3; its --json
// output holds the API's objects).
func (cl *keystoneCoffer) troveJSON(t testing.TB, u keystonetest.User, v any, args ...string) {
	t.Helper()
	out := cl.run(t, u, append([]string{"trove", "--json"}, args...)...)
	decodeCLI(t, out, v, "trove --json", args)
}

// decodeCLI decodes a CLI's JSON output into v, failing the test when it
// is not JSON. v is reset first: a decode into a reused map would keep
// keys of the previous command.
func decodeCLI(t testing.TB, out string, v any, cli string, args []string) {
	t.Helper()
	switch p := v.(type) {
	case *map[string]any:
		*p = nil
	case *[]map[string]any:
		*p = nil
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s %s: not JSON (%v): %s", cli, strings.Join(args, " "), err, out)
	}
}

// oscFails runs `openstack args...` as u, which must fail with output
// containing want (reported with Errorf: the test goes on).
func (cl *keystoneCoffer) oscFails(t testing.TB, u keystonetest.User, want string, args ...string) {
	t.Helper()
	cl.fails(t, u, want, append([]string{"openstack"}, args...)...)
}

// fails runs argv as u, which must fail with output containing want.
func (cl *keystoneCoffer) fails(t testing.TB, u keystonetest.User, want string, argv ...string) {
	t.Helper()
	out, err := cl.try(u, argv...)
	if err == nil || !strings.Contains(out, want) {
		t.Errorf("%s as %s: error %v, output %q; want a failure saying %q", strings.Join(argv, " "), u.Name, err, out, want)
	}
}

// column lists one column of a CLI's JSON table.
func column(rows []map[string]any, col string) []string {
	out := []string{}
	for _, r := range rows {
		out = append(out, fmt.Sprint(r[col]))
	}
	return out
}

// together runs independent checks concurrently, each in a goroutine of
// its own, and returns when all are done. Each CLI call costs 1.5-3 s,
// mostly Python starting up and a token from Keystone, so reads that do not
// depend on each other are best issued at once (cliSlots still caps how
// many run). Not parallel subtests: those wait for a -parallel slot, which
// the other parallel tests hold for minutes. A check's failures are the
// test's, prefixed with the check's name; if a check stopped (Fatal), the
// test stops once all are done (what follows may need what it did not
// get), while Errorf failures let it go on, as they would in sequence.
func together(t *testing.T, group string, checks ...check) {
	t.Helper()
	var wg sync.WaitGroup
	var stopped atomic.Bool
	for _, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ct := &checkT{TB: t, prefix: group + " / " + c.name + ": "}
			defer func() {
				if ct.stopped {
					stopped.Store(true)
				}
			}()
			c.f(ct)
		}()
	}
	wg.Wait()
	if stopped.Load() {
		t.FailNow()
	}
}

// check is one of together's concurrent checks.
type check struct {
	name string
	f    func(t testing.TB)
}

// checkT is the testing.TB a check runs with: the test's own, except that
// stopping (Fatal, FailNow, Skip) ends the check's goroutine instead of
// the test's — testing allows FailNow on the test's goroutine only — and
// together stops the test afterwards. Error, Log and Helper go to the test
// (safe from any goroutine).
type checkT struct {
	testing.TB
	prefix  string
	stopped bool
}

func (c *checkT) Error(args ...any) {
	c.TB.Helper()
	c.TB.Error(c.prefix + fmt.Sprint(args...))
}

func (c *checkT) Errorf(format string, args ...any) {
	c.TB.Helper()
	c.TB.Error(c.prefix + fmt.Sprintf(format, args...))
}

func (c *checkT) Fatal(args ...any) {
	c.TB.Helper()
	c.TB.Error(c.prefix + fmt.Sprint(args...))
	c.FailNow()
}

func (c *checkT) Fatalf(format string, args ...any) {
	c.TB.Helper()
	c.TB.Error(c.prefix + fmt.Sprintf(format, args...))
	c.FailNow()
}

func (c *checkT) FailNow() {
	c.TB.Fail()
	c.stopped = true
	runtime.Goexit()
}

func (c *checkT) Log(args ...any) {
	c.TB.Helper()
	c.TB.Log(c.prefix + fmt.Sprint(args...))
}

func (c *checkT) Logf(format string, args ...any) {
	c.TB.Helper()
	c.TB.Log(c.prefix + fmt.Sprintf(format, args...))
}

func (c *checkT) Skip(args ...any) {
	c.TB.Helper()
	c.Fatal(append([]any{"skip in a concurrent check: "}, args...)...)
}

func (c *checkT) Skipf(format string, args ...any) {
	c.TB.Helper()
	c.Fatalf("skip in a concurrent check: "+format, args...)
}

func (c *checkT) SkipNow() { c.Fatal("skip in a concurrent check") }

// troveclientFix is the directory of the sitecustomize.py that mends
// python-troveclient 8.0.0's Mistral client, which leaves the Keystone
// domains out and so cannot authenticate against any Keystone v3 (see the
// file): the CLIs' schedule-* and execution-* commands fail without it
// before they reach any workflow API, as TestScheduleTroveCLI shows.
func troveclientFix(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "troveclient-mistral-domains"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// tryFixed runs argv like try, with troveclientFix's directory (fixDir) on
// PYTHONPATH; fixDir "" runs the client as shipped.
func (cl *keystoneCoffer) tryFixed(u keystonetest.User, fixDir string, argv ...string) (string, error) {
	var env []string
	if fixDir != "" {
		env = []string{"PYTHONPATH=" + fixDir}
	}
	out, err := cl.execEnv(u, env, argv...)
	if err != nil {
		return err.Error(), err
	}
	return out, nil
}

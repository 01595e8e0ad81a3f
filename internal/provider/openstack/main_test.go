package openstack

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
)

// These tests run against real Keystone, Nova, Cinder, Neutron and Glance
// (fake hypervisor, fake volume backend, no data plane), brought up once
// per test process by scripts/openstack-up.sh:
//
//   - COFFER_TEST_OPENSTACK_DIR=DIR: use (and, if needed, start) the
//     OpenStack whose data directory is DIR, and leave it running; a
//     running one is reused in ~5 s. For repeated runs:
//     scripts/openstack-up.sh /tmp/os; COFFER_TEST_OPENSTACK_DIR=/tmp/os go test ...
//   - otherwise: a fresh one in a temporary directory (~1-2 min), stopped
//     and removed at the end.
//
// The up script installs its Debian packages only in CI (env CI set):
// elsewhere, missing packages make the tests skip, loudly. In CI every
// failure to bring OpenStack up fails the tests.
var cloud struct {
	skip    string // why the tests cannot run
	dir     string
	vars    map[string]string // the up script's exports
	cfg     Config            // the coffer service user
	admin   adminClients
	imageID string // "tiny", public, 1 MiB raw
	flavor  string // m1.tiny
}

type adminClients struct {
	compute, volume, network, image, identity *gophercloud.ServiceClient
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		cloud.skip = "-short: the OpenStack tests need ~2 GB and a minute or two to start OpenStack"
		os.Exit(m.Run())
	}
	stop, err := startCloud()
	if err != nil {
		cloud.skip = err.Error()
		fmt.Fprintln(os.Stderr, "openstack provider tests:", err)
	}
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.Exit(code)
}

// requireCloud skips (or in CI fails) a test when OpenStack is not up.
func requireCloud(tb testing.TB) {
	tb.Helper()
	if cloud.skip == "" {
		return
	}
	if os.Getenv("CI") != "" && !testing.Short() {
		tb.Fatalf("OpenStack is not available: %s", cloud.skip)
	}
	tb.Skipf("SKIPPING: OpenStack is not available: %s", cloud.skip)
}

// startCloud runs the up script and reads what it exports. The returned
// stop (nil when the cloud is kept) stops and removes it.
func startCloud() (stop func(), err error) {
	script, err := filepath.Abs("../../../scripts/openstack-up.sh")
	if err != nil {
		return nil, err
	}
	dir, keep := os.LookupEnv("COFFER_TEST_OPENSTACK_DIR")
	env := os.Environ()
	if os.Getenv("CI") == "" {
		env = append(env, "OS_SKIP_INSTALL=1")
	}
	if !keep {
		if dir, err = os.MkdirTemp("", "coffer-openstack-"); err != nil {
			return nil, err
		}
		base, err := freePortBase()
		if err != nil {
			return nil, err
		}
		env = append(env, "OS_PORT_BASE="+strconv.Itoa(base))
		stop = func() {
			down := exec.Command(filepath.Join(filepath.Dir(script), "openstack-down.sh"), dir, "--purge")
			down.Stdout, down.Stderr = io.Discard, io.Discard
			if err := down.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "openstack-down.sh:", err)
			}
		}
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, dir)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// Whatever was started must still be stopped.
		if stop != nil {
			stop()
		}
		hint := ""
		if os.Getenv("CI") == "" {
			hint = "\n(outside CI the tests install nothing: run `scripts/openstack-up.sh DIR` as root once " +
				"(it installs its packages), then COFFER_TEST_OPENSTACK_DIR=DIR go test ...)"
		}
		return nil, fmt.Errorf("scripts/openstack-up.sh %s: %v\n%s%s", dir, err, tail(stderr.String(), 15), hint)
	}
	fmt.Fprintf(os.Stderr, "openstack provider tests: OpenStack up in %s (%s)\n", time.Since(t0).Round(100*time.Millisecond), dir)

	cloud.dir = dir
	cloud.vars = map[string]string{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if kv, ok := strings.CutPrefix(sc.Text(), "export "); ok {
			k, v, _ := strings.Cut(kv, "=")
			cloud.vars[k] = v
		}
	}
	v := cloud.vars
	cloud.cfg = Config{
		AuthURL: v["COFFER_OS_AUTH_URL"], Username: v["COFFER_OS_USERNAME"], Password: v["COFFER_OS_PASSWORD"],
		ProjectName: v["COFFER_OS_PROJECT_NAME"], UserDomainName: v["COFFER_OS_USER_DOMAIN_NAME"],
		ProjectDomainName: v["COFFER_OS_PROJECT_DOMAIN_NAME"], Region: v["COFFER_OS_REGION"],
		ManagementNetworkID: v["COFFER_OS_NETWORK_ID"], NamePrefix: "coffer-",
	}
	cloud.imageID, cloud.flavor = v["OS_TEST_IMAGE_ID"], v["OS_TEST_FLAVOR_ID"]
	if err := cloud.cfg.validate(); err != nil || cloud.imageID == "" {
		return stop, fmt.Errorf("the up script's exports are incomplete (%v): %v", err, v)
	}
	if cloud.admin, err = adminLogin(ctx, v); err != nil {
		return stop, err
	}
	return stop, nil
}

// adminLogin makes clients for the cloud's admin, which the tests use to
// look at what the provider made (from outside it) and to read user-data.
func adminLogin(ctx context.Context, v map[string]string) (adminClients, error) {
	pc, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: v["OS_AUTH_URL"], Username: v["OS_USERNAME"], Password: v["OS_PASSWORD"],
		DomainName: "Default", TenantName: v["OS_PROJECT_NAME"], AllowReauth: true,
	})
	if err != nil {
		return adminClients{}, fmt.Errorf("admin login: %w", err)
	}
	eo := gophercloud.EndpointOpts{Region: v["OS_REGION_NAME"]}
	var a adminClients
	for _, c := range []struct {
		dst **gophercloud.ServiceClient
		mk  func(*gophercloud.ProviderClient, gophercloud.EndpointOpts) (*gophercloud.ServiceClient, error)
	}{
		{&a.compute, openstack.NewComputeV2}, {&a.volume, openstack.NewBlockStorageV3},
		{&a.network, openstack.NewNetworkV2}, {&a.image, openstack.NewImageV2}, {&a.identity, openstack.NewIdentityV3},
	} {
		if *c.dst, err = c.mk(pc, eo); err != nil {
			return adminClients{}, fmt.Errorf("admin clients: %w", err)
		}
	}
	// 2.3+ shows OS-EXT-SRV-ATTR:user_data (to admins); 2.52 tags.
	a.compute.Microversion = computeMicroversion
	return a, nil
}

// freePortBase finds a base for the up script's ports (+0…+50) that no
// program listens on, so the test's OpenStack does not collide with one
// already running on this machine.
func freePortBase() (int, error) {
	for base := 15200; base < 30000; base += 100 {
		free := true
		for _, off := range []int{0, 1, 2, 3, 4, 10, 20, 30, 40, 50} {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no free port range for OpenStack")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// newProvider is a provider as the coffer service user (or cfg, if given).
func newProvider(tb testing.TB, cfg ...Config) *Provider {
	tb.Helper()
	requireCloud(tb)
	c := cloud.cfg
	if len(cfg) > 0 {
		c = cfg[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := New(ctx, c, slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// testWriter sends the provider's log to the test's log.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

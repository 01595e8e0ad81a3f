package openstack

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/coffer-dbaas/coffer/internal/provider/openstack/openstacktest"
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

// startCloud brings the cloud up (openstacktest, its fresh ports searched
// from 15200, away from other packages') and reads what it exports. The
// returned stop (nil when the cloud is kept) stops and removes it.
func startCloud() (stop func(), err error) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c, stop, err := openstacktest.StartFrom(ctx, 15200)
	if err != nil {
		return stop, err
	}
	fmt.Fprintf(os.Stderr, "openstack provider tests: OpenStack up in %s (%s)\n", time.Since(t0).Round(100*time.Millisecond), c.Dir)

	cloud.dir, cloud.vars = c.Dir, c.Vars
	v := c.Vars
	cloud.cfg = Config{
		AuthURL: v["COFFER_OS_AUTH_URL"], Username: v["COFFER_OS_USERNAME"], Password: v["COFFER_OS_PASSWORD"],
		ProjectName: v["COFFER_OS_PROJECT_NAME"], UserDomainName: v["COFFER_OS_USER_DOMAIN_NAME"],
		ProjectDomainName: v["COFFER_OS_PROJECT_DOMAIN_NAME"], Region: v["COFFER_OS_REGION"],
		ManagementNetworkID: v["COFFER_OS_NETWORK_ID"], NamePrefix: "coffer-",
	}
	cloud.imageID, cloud.flavor = v["OS_TEST_IMAGE_ID"], v["OS_TEST_FLAVOR_ID"]
	if err := cloud.cfg.validate(); err != nil {
		return stop, fmt.Errorf("the up script's exports are incomplete (%v): %v", err, v)
	}
	// The provider asks for computeMicroversion; the admin's view too.
	c.Compute.Microversion = computeMicroversion
	cloud.admin = adminClients{compute: c.Compute, volume: c.Volume, network: c.Network, image: c.Image, identity: c.Identity}
	return stop, nil
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

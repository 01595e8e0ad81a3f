// Package openstacktest brings up (or reuses) the test OpenStack of
// scripts/openstack-up.sh, for the provider's own tests and those outside
// it:
// COFFER_TEST_OPENSTACK_DIR=DIR reuses (starting if needed) the cloud in
// DIR and leaves it running; otherwise a fresh one in a temporary
// directory is started and, by the returned stop, removed. Packages are
// installed only in CI.
package openstacktest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
)

// Cloud is a running test OpenStack.
type Cloud struct {
	Dir string
	// Vars are the up script's exports: COFFER_OS_* for the coffer service
	// user, OS_* for the admin, OS_TEST_IMAGE_ID, OS_TEST_FLAVOR_ID.
	Vars map[string]string
	// Admin clients, to look at what Coffer made from outside it. Compute
	// uses microversion 2.52 (user_data from 2.3, tags from 2.52).
	Compute, Volume, Network, Image, Identity *gophercloud.ServiceClient
}

// CofferEnv is the COFFER_OS_* settings as KEY=VALUE.
func (c *Cloud) CofferEnv() []string {
	var env []string
	for k, v := range c.Vars {
		if strings.HasPrefix(k, "COFFER_OS_") {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// Start runs the up script and logs in as the admin. stop (nil when the
// cloud is kept) stops and removes it; it is returned even with an error
// when something was started.
func Start(ctx context.Context) (c *Cloud, stop func(), err error) {
	return StartFrom(ctx, 15300)
}

// StartFrom is Start with a fresh cloud's ports searched from portFrom:
// test processes that may each start one (go test runs packages at once)
// search from different bases, so that two cannot pick the same free
// range before either listens.
func StartFrom(ctx context.Context, portFrom int) (c *Cloud, stop func(), err error) {
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "../../../../scripts/openstack-up.sh")
	dir, keep := os.LookupEnv("COFFER_TEST_OPENSTACK_DIR")
	env := os.Environ()
	if os.Getenv("CI") == "" {
		env = append(env, "OS_SKIP_INSTALL=1")
	}
	if !keep {
		if dir, err = os.MkdirTemp("", "coffer-openstack-"); err != nil {
			return nil, nil, err
		}
		base, err := freePortBase(portFrom)
		if err != nil {
			return nil, nil, err
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
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, dir)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		hint := ""
		if os.Getenv("CI") == "" {
			hint = "\n(outside CI nothing is installed: run `scripts/openstack-up.sh DIR` as root once " +
				"(it installs its packages), then COFFER_TEST_OPENSTACK_DIR=DIR go test ...)"
		}
		return nil, stop, fmt.Errorf("scripts/openstack-up.sh %s: %v\n%s%s", dir, err, tail(stderr.String(), 15), hint)
	}
	c = &Cloud{Dir: dir, Vars: map[string]string{}}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if kv, ok := strings.CutPrefix(sc.Text(), "export "); ok {
			k, v, _ := strings.Cut(kv, "=")
			c.Vars[k] = v
		}
	}
	for _, k := range []string{"COFFER_OS_AUTH_URL", "COFFER_OS_NETWORK_ID", "OS_TEST_IMAGE_ID", "OS_TEST_FLAVOR_ID", "OS_AUTH_URL"} {
		if c.Vars[k] == "" {
			return nil, stop, fmt.Errorf("the up script exported no %s: %v", k, c.Vars)
		}
	}
	v := c.Vars
	pc, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: v["OS_AUTH_URL"], Username: v["OS_USERNAME"], Password: v["OS_PASSWORD"],
		DomainName: "Default", TenantName: v["OS_PROJECT_NAME"], AllowReauth: true,
	})
	if err != nil {
		return nil, stop, fmt.Errorf("admin login: %w", err)
	}
	eo := gophercloud.EndpointOpts{Region: v["OS_REGION_NAME"]}
	for _, sc := range []struct {
		dst **gophercloud.ServiceClient
		mk  func(*gophercloud.ProviderClient, gophercloud.EndpointOpts) (*gophercloud.ServiceClient, error)
	}{
		{&c.Compute, openstack.NewComputeV2}, {&c.Volume, openstack.NewBlockStorageV3},
		{&c.Network, openstack.NewNetworkV2}, {&c.Image, openstack.NewImageV2}, {&c.Identity, openstack.NewIdentityV3},
	} {
		if *sc.dst, err = sc.mk(pc, eo); err != nil {
			return nil, stop, fmt.Errorf("admin clients: %w", err)
		}
	}
	c.Compute.Microversion = "2.52"
	return c, stop, nil
}

// freePortBase finds a base for the up script's ports (+0…+50), from
// portFrom, that no program listens on, so the test's OpenStack does not
// collide with one already running on this machine.
func freePortBase(portFrom int) (int, error) {
	for base := portFrom; base < 30000; base += 100 {
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

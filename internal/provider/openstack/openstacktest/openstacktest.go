// Package openstacktest brings up (or reuses) the test OpenStack of
// scripts/openstack-up.sh for tests outside the provider's package, the
// same way the provider's own tests do (see its main_test.go):
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
	Compute, Volume, Network *gophercloud.ServiceClient
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
		base, err := freePortBase()
		if err != nil {
			return nil, nil, err
		}
		env = append(env, "OS_PORT_BASE="+strconv.Itoa(base))
		stop = func() {
			down := exec.Command(filepath.Join(filepath.Dir(script), "openstack-down.sh"), dir, "--purge")
			down.Stdout, down.Stderr = io.Discard, io.Discard
			_ = down.Run()
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
			hint = "\n(outside CI nothing is installed: run `scripts/openstack-up.sh DIR` as root once, " +
				"then COFFER_TEST_OPENSTACK_DIR=DIR go test ...)"
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
	if c.Compute, err = openstack.NewComputeV2(pc, eo); err == nil {
		if c.Volume, err = openstack.NewBlockStorageV3(pc, eo); err == nil {
			c.Network, err = openstack.NewNetworkV2(pc, eo)
		}
	}
	if err != nil {
		return nil, stop, fmt.Errorf("admin clients: %w", err)
	}
	c.Compute.Microversion = "2.52"
	return c, stop, nil
}

// freePortBase finds a base for the up script's ports (+0…+50) that no
// program listens on.
func freePortBase() (int, error) {
	for base := 15300; base < 30000; base += 100 {
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

package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMainVersion(t *testing.T) {
	t.Parallel()
	var out, errOut syncBuffer
	code := run(context.Background(), []string{"-version"}, &out, &errOut, nil, nil)
	if code != 0 || !strings.HasPrefix(out.String(), "coffer-agent ") {
		t.Errorf("-version: code %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

func TestMainUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-nope"}, {"extra"}, {"-log-level", "loud"}} {
		var out, errOut syncBuffer
		if code := run(context.Background(), args, &out, &errOut, nil, nil); code != 2 {
			t.Errorf("%v: exit code %d, want 2 (stderr %q)", args, code, errOut.String())
		}
	}
}

func TestMainUnsupportedDatastore(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	cfg := api.config()
	cfg.Datastore = "mariadb"
	path := filepath.Join(t.TempDir(), "agent.json")
	writeJSON(t, path, cfg)
	newDriver := func(cfg protocol.AgentConfig) (driver.Driver, error) {
		return nil, errors.New("datastore mariadb not supported yet")
	}
	var out, errOut syncBuffer
	if code := run(context.Background(), []string{"-config", path}, &out, &errOut, nil, newDriver); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "datastore mariadb not supported yet") {
		t.Errorf("stderr %q does not say why", errOut.String())
	}
}

// TestMainRunsAndReloadsOnSIGHUP runs the command line against the fake
// API: a command is executed, a rotated token is picked up on SIGHUP, and
// cancellation (SIGTERM) ends it with status 0 without stopping the
// datastore.
func TestMainRunsAndReloadsOnSIGHUP(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	// Requests in flight while the token changes would make the test
	// racy: one heartbeat at start, and polls that park until a command
	// comes (run uses the real 25–55 s waits).
	api.hold = time.Minute
	cfg := api.config()
	cfg.HeartbeatSeconds = 60
	path := filepath.Join(t.TempDir(), "agent.json")
	writeJSON(t, path, cfg)

	drv := newFakeDriver()
	newDriver := func(got protocol.AgentConfig) (driver.Driver, error) {
		if got.Datastore != "postgresql" {
			return nil, errors.New("unexpected datastore")
		}
		return drv, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan os.Signal, 1)
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-config", path}, &out, &errOut, reload, newDriver) }()

	api.enqueue(protocol.Command{ID: "m-1", Name: "nope"})
	waitFor(t, "first result", func() (ok bool) {
		api.locked(func() { _, ok = api.recorded["m-1"] })
		return ok
	})

	waitFor(t, "the next poll to park", func() (ok bool) {
		api.locked(func() { ok = api.polls == 2 })
		return ok
	})

	// Rotate: the file gets the new token and the agent is told with
	// SIGHUP; only once it has reloaded does the server stop accepting
	// the old token, so the 401 path cannot be what picks it up.
	rotated := cfg
	rotated.Token = testInstanceID + ".rotated"
	writeJSON(t, path, rotated)
	reload <- syscall.SIGHUP
	waitFor(t, "the reload", func() bool {
		return strings.Contains(errOut.String(), `"token_changed":true`)
	})
	api.locked(func() { api.token = rotated.Token })
	api.enqueue(protocol.Command{ID: "m-2", Name: "nope"})
	waitFor(t, "result with the rotated token", func() (ok bool) {
		api.locked(func() { _, ok = api.recorded["m-2"] })
		return ok
	})

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d, want 0; stderr:\n%s", code, errOut.String())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("run did not return after cancellation")
	}
	logs := errOut.String()
	api.locked(func() {
		if api.authFails != 0 {
			t.Errorf("%d requests rejected; SIGHUP should have switched tokens first", api.authFails)
		}
		if got := api.resultToken["m-2"]; got != rotated.Token {
			t.Error("the result after SIGHUP was not posted with the rotated token")
		}
	})
	if strings.Contains(logs, cfg.Token) || strings.Contains(logs, rotated.Token) {
		t.Error("logs contain the token")
	}
	if !strings.Contains(logs, `"msg":"agent stopped; the datastore keeps running"`) {
		t.Errorf("logs are not JSON or lack the stop message:\n%s", logs)
	}
}

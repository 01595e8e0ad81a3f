package local

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/provider"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

// The real agent is not available to these tests, so the test binary plays
// every process the provider deals with, chosen by environment:
//
//	COFFER_FAKE_AGENT=1      the agent (see fakeAgent)
//	COFFER_FAKE_DATASTORE=1  a datastore that ignores SIGINT, like mysqld
//	COFFER_FAKE_WORKER=1     a worker that creates one server and exits
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("COFFER_FAKE_AGENT") == "1":
		fakeAgent()
	case os.Getenv("COFFER_FAKE_DATASTORE") == "1":
		fakeStubbornDatastore()
	case os.Getenv("COFFER_FAKE_WORKER") == "1":
		fakeWorker()
	default:
		os.Exit(m.Run())
	}
}

// fakeAgent behaves as the provider expects of the agent: it reads
// -config, writes its pid file, starts the "datastore" (sleep, working in
// DataDir, in its own session), re-reads its configuration on SIGHUP and
// exits on SIGTERM without stopping the datastore. It leaves traces for
// the tests in the instance directory: "starts" (a line per start),
// "token" (the token it started with), "hup" (the token after the last
// SIGHUP); and <DataDir>/datastore.pid.
func fakeAgent() {
	// First of all, as the real agent must: a Go program dies of SIGHUP
	// until it asks for it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)

	fs := flag.NewFlagSet("fake-agent", flag.ExitOnError)
	configPath := fs.String("config", "", "")
	fs.Parse(os.Args[1:])
	dir := filepath.Dir(*configPath)
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "fake agent:", err)
		os.Exit(1)
	}
	read := func() protocol.AgentConfig {
		b, err := os.ReadFile(*configPath)
		if err != nil {
			fail(err)
		}
		var cfg protocol.AgentConfig
		if err := json.Unmarshal(b, &cfg); err != nil {
			fail(err)
		}
		return cfg
	}
	cfg := read()
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := os.WriteFile(cfg.PIDFile, pid, 0o644); err != nil {
		fail(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "starts"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fail(err)
	}
	f.Write(pid)
	f.Close()
	if err := atomicfile.Write(filepath.Join(dir, "token"), []byte(cfg.Token), 0o644); err != nil {
		fail(err)
	}

	datastores := []*exec.Cmd{exec.Command("sleep", "3600")}
	datastores[0].Dir = cfg.DataDir
	if os.Getenv("COFFER_FAKE_STUBBORN") == "1" {
		// Found only by its arguments (it works in /), and ignores SIGINT.
		cmd := exec.Command(os.Args[0], "-datadir", cfg.DataDir)
		cmd.Dir = "/"
		cmd.Env = append(os.Environ(), "COFFER_FAKE_AGENT=0", "COFFER_FAKE_DATASTORE=1")
		datastores = append(datastores, cmd)
	}
	for i, cmd := range datastores {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			fail(err)
		}
		// The stubborn one announces itself once it ignores SIGINT.
		if i == 0 {
			name := filepath.Join(cfg.DataDir, "datastore0.pid")
			if err := atomicfile.Write(name, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
				fail(err)
			}
		}
		cmd.Process.Release()
	}

	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			cfg = read()
			if err := atomicfile.Write(filepath.Join(dir, "hup"), []byte(cfg.Token), 0o644); err != nil {
				fail(err)
			}
		case syscall.SIGTERM:
			os.Exit(0)
		}
	}
}

// fakeStubbornDatastore ignores SIGINT, as mysqld does, and then writes
// its pid to <-datadir>/datastore1.pid.
func fakeStubbornDatastore() {
	signal.Ignore(syscall.SIGINT)
	if len(os.Args) != 3 || os.Args[1] != "-datadir" {
		fmt.Fprintln(os.Stderr, "fake datastore: usage: -datadir DIR")
		os.Exit(2)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := atomicfile.Write(filepath.Join(os.Args[2], "datastore1.pid"), pid, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "fake datastore:", err)
		os.Exit(1)
	}
	time.Sleep(time.Hour)
}

// fakeWorker creates the server COFFER_FAKE_WORKER_ID in
// COFFER_FAKE_WORKER_ROOT and exits at once, as a worker that is
// restarted right after its job.
func fakeWorker() {
	p, err := New(Config{
		Root:          os.Getenv("COFFER_FAKE_WORKER_ROOT"),
		AgentCommand:  []string{os.Args[0]},
		Env:           []string{"COFFER_FAKE_AGENT=1", "GORACE=atexit_sleep_ms=0"},
		AddressPrefix: os.Getenv("COFFER_FAKE_WORKER_PREFIX"),
	})
	if err == nil {
		_, err = p.CreateServer(context.Background(), testSpec(os.Getenv("COFFER_FAKE_WORKER_ID"), "redis", "token-1"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake worker:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func testSpec(id, datastore, token string) provider.ServerSpec {
	return provider.ServerSpec{
		InstanceID: id,
		Datastore:  datastore,
		Agent: protocol.AgentConfig{
			APIURL: "https://127.0.0.1:8780",
			Token:  id + "." + token,
		},
	}
}

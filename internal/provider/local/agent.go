package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

// Timings of stopping an instance, and of the agent's start-up.
var (
	// agentStopTimeout is how long the agent has to exit on SIGTERM.
	agentStopTimeout = 10 * time.Second
	// datastoreStopTimeout is how long the datastore has to shut down
	// before it is killed.
	datastoreStopTimeout = 15 * time.Second
	// datastoreEscalateAfter is when processes that ignored SIGINT get
	// SIGTERM: mysqld ignores SIGINT, and a PostgreSQL postmaster already
	// in fast shutdown ignores the (smart shutdown) SIGTERM.
	datastoreEscalateAfter = 2 * time.Second
	// agentSettle is how old an agent must be before it is sent SIGHUP. A
	// Go program dies of SIGHUP until it calls signal.Notify, so an agent
	// signalled in its first milliseconds (two CreateServer calls in quick
	// succession) would be killed instead of reloaded. A guess, but a
	// generous one: a Go binary gets to main in milliseconds.
	agentSettle = time.Second
	// pollInterval paces the waits for processes to exit.
	pollInterval = 25 * time.Millisecond
)

// runningAgent returns the pid of the instance's live agent, 0 if none. The
// pid file is the fast path; the /proc scan finds an agent whose pid file
// was never written (a worker crashed right after starting it), so that it
// is neither duplicated nor leaked.
func (p *Provider) runningAgent(dir string) (int, error) {
	configPath := filepath.Join(dir, "agent.json")
	if pid := readPID(filepath.Join(dir, "agent.pid")); isAgent(pid, configPath) {
		return pid, nil
	}
	pid, err := findAgent(configPath)
	if err != nil {
		return 0, fmt.Errorf("find agent: %w", err)
	}
	return pid, nil
}

// startAgent starts the instance's agent, detached from this process: in
// its own session (no signal aimed at the worker's process group or
// terminal reaches it), with its output appended to agent.log, and reaped
// by a goroutine rather than waited for, so the worker may exit while it
// runs on. The caller holds the instance lock.
func (p *Provider) startAgent(dir string) (int, error) {
	logFile, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("open agent log: %w", err)
	}
	defer logFile.Close()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer devNull.Close()

	args := slices.Concat(p.command[1:], []string{"-config", filepath.Join(dir, "agent.json")})
	cmd := exec.Command(p.command[0], args...)
	cmd.Dir = dir
	cmd.Env = slices.Concat(os.Environ(), p.env)
	// *os.File streams are handed to the child as they are: no copying
	// goroutines that would die with the worker.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start agent: %w", err)
	}
	pid := cmd.Process.Pid
	go func() {
		// Reap the agent if it exits while this process lives, so it does
		// not linger as a zombie; if this process exits first, init
		// adopts and reaps it.
		err := cmd.Wait()
		p.logger.Info("local provider: agent exited", "dir", dir, "pid", pid, "err", err)
	}()
	// The agent writes its pid file too, but only once it is up; writing
	// it now closes the window in which a retried CreateServer would start
	// a second agent.
	if err := atomicfile.Write(filepath.Join(dir, "agent.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return 0, fmt.Errorf("write agent pid: %w", err)
	}
	return pid, nil
}

// ensureAgent makes sure the instance's agent runs with the configuration
// just written: it tells a running agent to reload it, or starts one. The
// caller holds the instance lock.
func (p *Provider) ensureAgent(ctx context.Context, dir string) (pid int, started bool, err error) {
	configPath, pidPath := filepath.Join(dir, "agent.json"), filepath.Join(dir, "agent.pid")
	for range 3 {
		pid, err := p.runningAgent(dir)
		if err != nil {
			return 0, false, err
		}
		if pid == 0 {
			pid, err := p.startAgent(dir)
			return pid, true, err
		}
		// A Go program dies of SIGHUP until it calls signal.Notify: give a
		// young agent time to get there.
		if age, err := processAge(pid); err == nil && age < agentSettle {
			if err := sleep(ctx, agentSettle-age); err != nil {
				return 0, false, fmt.Errorf("reload agent: %w", err)
			}
		}
		// Look again: the agent may have exited meanwhile, or what the scan
		// found was a child of the agent caught between fork and exec
		// (it shows its parent's arguments until it becomes the datastore).
		if !isAgent(pid, configPath) {
			continue
		}
		if readPID(pidPath) != pid {
			// Found by scanning /proc: record it for the next call.
			if err := atomicfile.Write(pidPath, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
				return 0, false, fmt.Errorf("write agent pid: %w", err)
			}
		}
		if err := sendSignal(pid, syscall.SIGHUP); err != nil {
			return 0, false, fmt.Errorf("reload agent: %w", err)
		}
		return pid, false, nil
	}
	return 0, false, errors.New("agent keeps exiting")
}

// stopAgent stops the instance's agent: SIGTERM, then SIGKILL if it has not
// exited within agentStopTimeout. The agent leaves the datastore running;
// stopProcesses deals with it.
func (p *Provider) stopAgent(ctx context.Context, dir string) error {
	pid, err := p.runningAgent(dir)
	if err != nil || pid == 0 {
		return err
	}
	configPath := filepath.Join(dir, "agent.json")
	gone := func() bool { return !isAgent(pid, configPath) }
	if err := sendSignal(pid, syscall.SIGTERM); err != nil {
		return err
	}
	if done, err := waitUntil(ctx, agentStopTimeout, gone); done || err != nil {
		return err
	}
	p.logger.WarnContext(ctx, "local provider: agent did not exit on SIGTERM, killing it", "dir", dir, "pid", pid)
	if err := sendSignal(pid, syscall.SIGKILL); err != nil {
		return err
	}
	if done, err := waitUntil(ctx, 5*time.Second, gone); done || err != nil {
		return err
	}
	return fmt.Errorf("process %d survived SIGKILL", pid)
}

// stopProcesses stops every process working in or naming the instance
// directory: the datastore and anything it started. SIGINT goes only to the
// roots of the process trees, because a datastore shuts its own children
// down (and SIGINT to a PostgreSQL backend would only cancel its query):
// it is PostgreSQL's fast shutdown and makes Redis exit. Whatever is still
// there after datastoreEscalateAfter (mysqld ignores SIGINT; a child
// orphaned by its parent's exit) gets SIGTERM, and after
// datastoreStopTimeout everything left is killed. Data is not at stake: the
// directory is removed next.
func (p *Provider) stopProcesses(ctx context.Context, dir string) error {
	procs, err := instanceProcesses(dir)
	if err != nil || len(procs) == 0 {
		return err
	}
	signalAll := func(procs []procInfo, sig syscall.Signal, rootsOnly bool) error {
		in := make(map[int]bool, len(procs))
		for _, pr := range procs {
			in[pr.pid] = true
		}
		for _, pr := range procs {
			if rootsOnly && in[pr.ppid] {
				continue
			}
			if err := sendSignal(pr.pid, sig); err != nil {
				return err
			}
		}
		return nil
	}
	var scanErr error
	gone := func() bool {
		procs, scanErr = instanceProcesses(dir)
		return scanErr != nil || len(procs) == 0
	}

	p.logger.InfoContext(ctx, "local provider: stopping instance processes", "dir", dir, "count", len(procs))
	if err := signalAll(procs, syscall.SIGINT, true); err != nil {
		return err
	}
	if done, err := waitUntil(ctx, datastoreEscalateAfter, gone); err != nil || scanErr != nil || done {
		return errors.Join(err, scanErr)
	}
	if err := signalAll(procs, syscall.SIGTERM, false); err != nil {
		return err
	}
	if done, err := waitUntil(ctx, datastoreStopTimeout-datastoreEscalateAfter, gone); err != nil || scanErr != nil || done {
		return errors.Join(err, scanErr)
	}

	// Kill everything, children included, until nothing is left: a dying
	// parent may still fork.
	p.logger.WarnContext(ctx, "local provider: instance processes did not stop, killing them", "dir", dir, "count", len(procs))
	deadline := time.Now().Add(5 * time.Second)
	for len(procs) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d survived SIGKILL, e.g. %d", len(procs), procs[0].pid)
		}
		if err := signalAll(procs, syscall.SIGKILL, false); err != nil {
			return err
		}
		if _, err := waitUntil(ctx, 500*time.Millisecond, gone); err != nil || scanErr != nil {
			return errors.Join(err, scanErr)
		}
	}
	return nil
}

// waitUntil polls cond until it holds (true), timeout passes (false) or ctx
// ends (its error).
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return false, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

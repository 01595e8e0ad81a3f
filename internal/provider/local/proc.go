package local

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The provider finds its processes through /proc rather than by remembering
// them: the worker that started an agent may be long gone, so the only
// durable facts are the pid files and what the kernel reports.

// userHZ is the unit of /proc/<pid>/stat's start time. The kernel exports
// USER_HZ, which is 100 on every architecture Linux runs Go on; there is no
// way to ask without cgo (sysconf(_SC_CLK_TCK)).
const userHZ = 100

// procInfo is what the provider needs to know about a process.
type procInfo struct {
	pid  int
	ppid int
}

// cmdline returns the process's arguments, or nil if it is gone or a zombie
// (a zombie's cmdline is empty, which is what we want: it holds nothing and
// must not be taken for a live agent).
func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// argsMention reports whether any argument names dir or a path below it
// ("-D <dir>/volume/data", "--datadir=<dir>/volume", "<dir>/agent.json").
// Instance directories end in an instance id, so a false match on another
// path would need that id in it.
func argsMention(args []string, dir string) bool {
	for _, a := range args {
		if strings.Contains(a+"/", dir+"/") {
			return true
		}
	}
	return false
}

// cwdInside reports whether the process's working directory is dir or below
// it. A directory removed under a process reads as "<path> (deleted)".
func cwdInside(pid int, dir string) bool {
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return false
	}
	cwd = strings.TrimSuffix(cwd, " (deleted)")
	return cwd == dir || strings.HasPrefix(cwd, dir+"/")
}

// stat reads the parent pid, state and start time (in clock ticks after
// boot) from /proc/<pid>/stat.
func stat(pid int) (ppid int, state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses,
	// so fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("parse /proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), f[1] field 4 (ppid), f[19] field 22 (starttime).
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	if ppid, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, 0, fmt.Errorf("parse /proc/%d/stat ppid: %w", pid, err)
	}
	if start, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return 0, 0, 0, fmt.Errorf("parse /proc/%d/stat starttime: %w", pid, err)
	}
	return ppid, f[0][0], start, nil
}

// processAge is how long ago the process started, to 10 ms.
func processAge(pid int) (time.Duration, error) {
	_, _, start, err := stat(pid)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("parse /proc/uptime: empty")
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/uptime: %w", err)
	}
	age := time.Duration(up*float64(time.Second)) - time.Duration(start)*time.Second/userHZ
	return max(age, 0), nil
}

// readPID reads a pid file; 0 if it is missing or unreadable.
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// isAgent reports whether pid is a live agent of the instance whose
// configuration is configPath. Checking the arguments, not just that the
// pid exists, keeps a pid reused by an unrelated process after a reboot or
// a crash from being signalled or taken for the agent.
func isAgent(pid int, configPath string) bool {
	if pid <= 1 {
		return false
	}
	for _, a := range cmdline(pid) {
		if a == configPath {
			return true
		}
	}
	return false
}

// pids lists the processes in /proc.
func pids() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 1 {
			out = append(out, pid)
		}
	}
	return out, nil
}

// findAgent scans /proc for an agent of configPath, for when the pid file
// is missing (a worker crashed between starting the agent and writing it).
func findAgent(configPath string) (int, error) {
	all, err := pids()
	if err != nil {
		return 0, err
	}
	for _, pid := range all {
		if isAgent(pid, configPath) {
			return pid, nil
		}
	}
	return 0, nil
}

// instanceProcesses lists the live processes that belong to the instance
// directory dir: those working inside it (PostgreSQL, MariaDB and Redis all
// chdir into their data directory, and their children inherit it) and those
// whose arguments name it. The calling process is never included.
func instanceProcesses(dir string) ([]procInfo, error) {
	all, err := pids()
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var out []procInfo
	for _, pid := range all {
		if pid == self || !belongs(pid, dir) {
			continue
		}
		ppid, state, _, err := stat(pid)
		if err != nil || state == 'Z' {
			continue // gone, or dead and waiting for its parent to reap it
		}
		out = append(out, procInfo{pid: pid, ppid: ppid})
	}
	return out, nil
}

func belongs(pid int, dir string) bool {
	return cwdInside(pid, dir) || argsMention(cmdline(pid), dir)
}

// sendSignal sends sig to pid, ignoring a process that has already exited.
func sendSignal(pid int, sig syscall.Signal) error {
	err := syscall.Kill(pid, sig)
	if err == nil || errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return fmt.Errorf("signal %d to process %d: %w", sig, pid, err)
}

// absDir makes dir absolute with symlinks resolved, so that it compares
// equal to what /proc/<pid>/cwd reports.
func absDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

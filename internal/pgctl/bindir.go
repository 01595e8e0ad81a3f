package pgctl

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// EnvBinDir names the environment variable that overrides where FindBinDir
// looks for the PostgreSQL server programs.
const EnvBinDir = "COFFER_PG_BINDIR"

// debianBinGlob is where Debian and Ubuntu install each major version's
// server programs side by side; they are not on PATH there.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// serverPrograms are the programs a bin directory must hold to be usable.
var serverPrograms = []string{"initdb", "pg_ctl", "postgres"}

// FindBinDir returns the directory holding initdb, pg_ctl and postgres:
// $COFFER_PG_BINDIR if set, else the highest-numbered
// /usr/lib/postgresql/<N>/bin, else the directory of `initdb` found on PATH
// (symlinks resolved, so Homebrew-style links lead to the real installation).
func FindBinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if err := checkBinDir(dir); err != nil {
			return "", fmt.Errorf("find postgres binaries: $%s: %w", EnvBinDir, err)
		}
		return dir, nil
	}

	dirs, _ := filepath.Glob(debianBinGlob) // the pattern is valid: no error
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(dirs[j])), filepath.Base(filepath.Dir(dirs[i])))
	})
	for _, dir := range dirs {
		if checkBinDir(dir) == nil {
			return dir, nil
		}
	}

	initdb, err := exec.LookPath("initdb")
	if err == nil {
		if real, err := filepath.EvalSymlinks(initdb); err == nil {
			initdb = real
		}
		dir := filepath.Dir(initdb)
		if err := checkBinDir(dir); err != nil {
			return "", fmt.Errorf("find postgres binaries: initdb on PATH: %w", err)
		}
		return dir, nil
	}
	return "", fmt.Errorf("find postgres binaries: no initdb in $%s, %s or PATH; install the PostgreSQL server (e.g. apt-get install postgresql) or set $%s",
		EnvBinDir, debianBinGlob, EnvBinDir)
}

// checkBinDir reports whether dir holds every server program.
func checkBinDir(dir string) error {
	var errs []error
	for _, prog := range serverPrograms {
		path := filepath.Join(dir, prog)
		fi, err := os.Stat(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("%s is not an executable file", path))
		}
	}
	return errors.Join(errs...)
}

// versionLess orders version strings such as "9.6", "15" and "16"
// numerically, component by component; non-numeric components compare as 0
// so odd directory names neither win nor break the ordering.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return a < b
}

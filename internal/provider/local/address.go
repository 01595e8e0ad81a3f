package local

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

// Addresses are claimed in <Root>/.addresses/<ip>, one file per address
// holding the owning instance id. Creating the file with O_EXCL is the
// claim, so several worker processes on one host never hand out the same
// address, without a lock or a database. The instance also records its
// address in <dir>/address; the claim files are the authority, the copy
// only saves a scan.

const addressesDir = ".addresses"

// parsePrefix checks that prefix is the first two octets of a loopback /16,
// e.g. "127.10".
func parsePrefix(prefix string) ([2]byte, error) {
	addr, err := netip.ParseAddr(prefix + ".0.0")
	if err != nil || !addr.Is4() || !addr.IsLoopback() || strings.Count(prefix, ".") != 1 {
		return [2]byte{}, fmt.Errorf("address prefix %q is not a loopback /16 such as 127.10", prefix)
	}
	a := addr.As4()
	return [2]byte{a[0], a[1]}, nil
}

// candidate returns the n-th host address of the /16; n runs from 2 (x.y.0.2;
// .0.1 is left alone by convention) to 65534 (x.y.255.254).
func (p *Provider) candidate(n int) string {
	return netip.AddrFrom4([4]byte{p.prefix[0], p.prefix[1], byte(n >> 8), byte(n)}).String()
}

func (p *Provider) claimPath(ip string) string {
	return filepath.Join(p.root, addressesDir, ip)
}

// claims reads every claim: address → instance id.
func (p *Provider) claims() (map[string]string, error) {
	entries, err := os.ReadDir(filepath.Join(p.root, addressesDir))
	if err != nil {
		return nil, fmt.Errorf("list address claims: %w", err)
	}
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		b, err := os.ReadFile(p.claimPath(e.Name()))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // released meanwhile
			}
			return nil, fmt.Errorf("read address claim: %w", err)
		}
		out[e.Name()] = strings.TrimSpace(string(b))
	}
	return out, nil
}

// claim creates the claim file for ip; false if someone holds it already.
func (p *Provider) claim(ip, instanceID string) (bool, error) {
	f, err := os.OpenFile(p.claimPath(ip), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim address %s: %w", ip, err)
	}
	_, werr := f.WriteString(instanceID)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return false, fmt.Errorf("claim address %s: %w", ip, werr)
	}
	return true, nil
}

// allocate returns the instance's address, claiming one if it has none. It
// is idempotent: the address recorded in dir, or a claim left behind by an
// attempt that crashed before recording it, is reused. The caller holds the
// instance lock.
func (p *Provider) allocate(instanceID, dir string, port int) (string, error) {
	recorded := filepath.Join(dir, "address")
	if b, err := os.ReadFile(recorded); err == nil {
		ip := strings.TrimSpace(string(b))
		if err := p.reclaim(ip, instanceID); err != nil {
			return "", err
		}
		return ip, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read address: %w", err)
	}

	claimed, err := p.claims()
	if err != nil {
		return "", err
	}
	ip := ""
	for addr, owner := range claimed {
		if owner == instanceID {
			ip = addr
			break
		}
	}
	for n := 2; ip == "" && n <= 65534; n++ {
		addr := p.candidate(n)
		if _, taken := claimed[addr]; taken {
			continue
		}
		// Something outside Coffer (or a datastore whose claim was lost)
		// may listen there; the datastore could not start.
		free, err := bindable(addr, port)
		if err != nil {
			return "", err
		}
		if !free {
			continue
		}
		ok, err := p.claim(addr, instanceID)
		if err != nil {
			return "", err
		}
		if ok {
			ip = addr
		}
	}
	if ip == "" {
		return "", fmt.Errorf("no free address in %d.%d.0.0/16 for port %d (is something listening on it on all addresses?)",
			p.prefix[0], p.prefix[1], port)
	}
	if err := atomicfile.Write(recorded, []byte(ip+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("record address: %w", err)
	}
	return ip, nil
}

// reclaim makes sure the claim for an address recorded in the instance
// directory exists and is the instance's (someone may have cleaned up
// .addresses by hand).
func (p *Provider) reclaim(ip, instanceID string) error {
	if _, err := netip.ParseAddr(ip); err != nil {
		return fmt.Errorf("recorded address %q: %w", ip, err)
	}
	ok, err := p.claim(ip, instanceID)
	if err != nil || ok {
		return err
	}
	b, err := os.ReadFile(p.claimPath(ip))
	if err != nil {
		return fmt.Errorf("read address claim: %w", err)
	}
	if owner := strings.TrimSpace(string(b)); owner != instanceID {
		return fmt.Errorf("address %s is claimed by instance %s", ip, owner)
	}
	return nil
}

// release removes every claim the instance holds.
func (p *Provider) release(instanceID string) error {
	claimed, err := p.claims()
	if err != nil {
		return err
	}
	for ip, owner := range claimed {
		if owner != instanceID {
			continue
		}
		if err := os.Remove(p.claimPath(ip)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("release address %s: %w", ip, err)
		}
	}
	return nil
}

// bindable reports whether ip:port can be listened on right now. Only
// "address in use" means taken; any other failure (say, a prefix that is not
// routed to lo) would fail for every address and is returned.
func bindable(ip string, port int) (bool, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return false, nil
		}
		return false, fmt.Errorf("probe %s:%d: %w", ip, port, err)
	}
	l.Close()
	return true, nil
}

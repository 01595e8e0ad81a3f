// Package tlsca is the embedded default's private certificate authority for
// the agent channel. Agents trust only this CA (its PEM travels in their
// configuration), so the agent API needs no publicly trusted certificate
// and an agent cannot be pointed at any other server with a valid public
// one.
//
// Everything lives in one directory: ca.pem and ca-key.pem (10 years) and
// server.pem and server-key.pem (1 year, reissued by LoadOrCreate when it
// nears expiry or must cover a new host name). The CA is never replaced
// automatically: every running agent trusts it, and a new one would cut
// them all off.
package tlsca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 365 * 24 * time.Hour
	// renewBefore: a server certificate expiring sooner is reissued.
	renewBefore = 30 * 24 * time.Hour
	// backdate tolerates clocks a little behind this one.
	backdate = time.Hour
)

// File names in the CA directory.
const (
	caCertFile     = "ca.pem"
	caKeyFile      = "ca-key.pem"
	serverCertFile = "server.pem"
	serverKeyFile  = "server-key.pem"
	lockFile       = ".lock"
)

// defaultHosts are always in the server certificate: the all-in-one's
// agents reach the API on the loopback interface.
var defaultHosts = []string{"127.0.0.1", "::1", "localhost"}

// Bundle is the CA certificate and the agent API's server certificate.
type Bundle struct {
	// CACertPEM goes into every agent's configuration (AgentConfig.CACert).
	CACertPEM []byte
	// ServerCert is the agent API's certificate, Leaf filled in.
	ServerCert tls.Certificate
}

// ServerTLSConfig serves the agent API with the server certificate.
func (b *Bundle) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{b.ServerCert},
	}
}

// ClientTLSConfig trusts the CA and nothing else, as an agent does.
func (b *Bundle) ClientTLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b.CACertPEM)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
	}
}

// LoadOrCreate loads ca.pem/ca-key.pem and server.pem/server-key.pem from
// dir, creating them on first use (dir 0700, keys 0600): an ECDSA P-256 CA
// valid 10 years, and a server certificate signed by it valid 1 year for
// the given hosts (IPs and DNS names; 127.0.0.1, ::1 and localhost are
// always included). If the existing server certificate does not cover all
// hosts, expires within 30 days or is unusable, a new one is issued by the
// same CA; it also keeps the names of the one it replaces, so that
// processes asking for different hosts do not reissue it back and forth.
//
// Processes sharing dir (an api and a worker on one host) are serialised by
// a lock file, so they never create two different CAs.
func LoadOrCreate(dir string, hosts []string) (*Bundle, error) {
	// Only dir itself is private: parents made here are 0755, because the
	// same tree may hold the local provider's instances, which datastores
	// running as other users must traverse.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("tls ca %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("tls ca %s: %w", dir, err)
	}
	unlock, err := lock(filepath.Join(dir, lockFile))
	if err != nil {
		return nil, fmt.Errorf("tls ca %s: %w", dir, err)
	}
	defer unlock()

	ca, caKey, caPEM, err := loadOrCreateCA(dir)
	if err != nil {
		return nil, fmt.Errorf("tls ca %s: %w", dir, err)
	}
	cert, err := loadOrIssueServer(dir, ca, caKey, hosts, time.Now())
	if err != nil {
		return nil, fmt.Errorf("tls ca %s: %w", dir, err)
	}
	return &Bundle{CACertPEM: caPEM, ServerCert: cert}, nil
}

// loadOrCreateCA loads the CA, or creates it if neither of its files
// exists. Half a CA (one file missing, or a key that does not match) is an
// error for an operator to resolve, not something to paper over with a new
// CA.
func loadOrCreateCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return createCA(certPath, keyPath)
	case certErr != nil:
		return nil, nil, nil, fmt.Errorf("read CA (to start over, remove %s too and reconfigure every agent): %w", caKeyFile, certErr)
	case keyErr != nil:
		return nil, nil, nil, fmt.Errorf("read CA key (to start over, remove %s too and reconfigure every agent): %w", caCertFile, keyErr)
	}
	pair, err := keyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load CA: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, nil, fmt.Errorf("load CA: key is %T, want ECDSA", pair.PrivateKey)
	}
	if !pair.Leaf.IsCA {
		return nil, nil, nil, errors.New("load CA: ca.pem is not a CA certificate")
	}
	return pair.Leaf, key, certPEM, nil
}

func createCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The serial in the name tells CAs of different installations
		// apart in an agent's logs.
		Subject:               pkix.Name{Organization: []string{"Coffer"}, CommonName: "Coffer agent CA " + serial.Text(16)[:8]},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// A crash between the two writes leaves half a CA, which the next call
	// reports (see loadOrCreateCA): rare, and better than guessing.
	if err := writeKey(keyPath, key); err != nil {
		return nil, nil, nil, err
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return nil, nil, nil, fmt.Errorf("write CA: %w", err)
	}
	return cert, key, certPEM, nil
}

// loadOrIssueServer returns the stored server certificate if it is good
// for hosts until at least renewBefore from now, else issues a new one.
func loadOrIssueServer(dir string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, now time.Time) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, serverCertFile), filepath.Join(dir, serverKeyFile)
	want := normalizeHosts(append(slices.Clone(defaultHosts), hosts...))

	var keep []string
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	if certErr == nil && keyErr == nil {
		// Anything wrong with the stored pair (half written, signed by a
		// CA since replaced by hand) is fixed by issuing a new one.
		if pair, err := keyPair(certPEM, keyPEM); err == nil && pair.Leaf.CheckSignatureFrom(ca) == nil {
			keep = certHosts(pair.Leaf)
			if covers(pair.Leaf, want) && now.Add(renewBefore).Before(pair.Leaf.NotAfter) {
				return pair, nil
			}
		}
	} else if !errors.Is(certErr, fs.ErrNotExist) && certErr != nil {
		return tls.Certificate{}, fmt.Errorf("read server certificate: %w", certErr)
	} else if !errors.Is(keyErr, fs.ErrNotExist) && keyErr != nil {
		return tls.Certificate{}, fmt.Errorf("read server key: %w", keyErr)
	}
	return issueServer(certPath, keyPath, ca, caKey, normalizeHosts(append(want, keep...)), now, serverValidity)
}

func issueServer(certPath, keyPath string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, now time.Time, validity time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create server key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Coffer"}, CommonName: "Coffer agent API"},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	// A certificate cannot outlive its issuer.
	if ca.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM, err := encodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	// Two renames are not atomic together; a crash in between leaves a
	// pair that does not match, which the next call reissues.
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("write server key: %w", err)
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("write server certificate: %w", err)
	}
	pair, err := keyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load issued server certificate: %w", err)
	}
	return pair, nil
}

// keyPair parses a certificate and its key, Leaf filled in (X509KeyPair
// leaves it nil under GODEBUG=x509keypairleaf=0).
func keyPair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return tls.Certificate{}, err
		}
	}
	return pair, nil
}

// normalizeHosts lower-cases names, writes IPs canonically, and sorts and
// dedupes the list.
func normalizeHosts(hosts []string) []string {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			out = append(out, ip.String())
		} else {
			out = append(out, strings.ToLower(h))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// certHosts lists the names and addresses a certificate is for.
func certHosts(c *x509.Certificate) []string {
	out := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

func covers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func serialNumber() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return serial, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	b, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

// lock takes an exclusive flock on path, creating it.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock: %w", err)
	}
	return func() { f.Close() }, nil
}

package tlsca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "tls")
	b, err := LoadOrCreate(dir, []string{"coffer.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{
		"": 0o700, caKeyFile: 0o600, serverKeyFile: 0o600, caCertFile: 0o644, serverCertFile: 0o644,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("mode of %q = %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	leaf := b.ServerCert.Leaf
	for _, h := range []string{"127.0.0.1", "::1", "localhost", "coffer.example.test"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("server certificate does not cover %s: %v", h, err)
		}
	}
	if d := time.Until(leaf.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("server certificate valid for %v, want a year", d)
	}
	ca := parseCA(t, b)
	if !ca.IsCA || time.Until(ca.NotAfter) < 9*365*24*time.Hour {
		t.Errorf("CA: IsCA %v, NotAfter %v", ca.IsCA, ca.NotAfter)
	}

	// Reloading changes nothing.
	again, err := LoadOrCreate(dir, []string{"COFFER.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CACertPEM, b.CACertPEM) {
		t.Error("reload returned another CA")
	}
	if !again.ServerCert.Leaf.Equal(leaf) {
		t.Error("reload reissued a server certificate that was still good")
	}

	// A new host: new server certificate, same CA, old names kept.
	more, err := LoadOrCreate(dir, []string{"10.1.2.3", "api.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(more.CACertPEM, b.CACertPEM) {
		t.Error("adding a host replaced the CA")
	}
	if more.ServerCert.Leaf.Equal(leaf) {
		t.Fatal("adding a host did not reissue the server certificate")
	}
	for _, h := range []string{"10.1.2.3", "api.example.test", "coffer.example.test", "localhost", "::1"} {
		if err := more.ServerCert.Leaf.VerifyHostname(h); err != nil {
			t.Errorf("reissued certificate does not cover %s: %v", h, err)
		}
	}
	if _, err := more.ServerCert.Leaf.Verify(x509.VerifyOptions{Roots: more.ClientTLSConfig().RootCAs}); err != nil {
		t.Errorf("reissued certificate does not verify against the CA: %v", err)
	}
}

func TestTLSConfigs(t *testing.T) {
	t.Parallel()
	b, err := LoadOrCreate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("agent api"))
	}))
	srv.TLS = b.ServerTLSConfig()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the rejected handshakes below
	srv.StartTLS()
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: b.ClientTLSConfig()}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	resp.Body.Close()
	if !resp.TLS.PeerCertificates[0].Equal(b.ServerCert.Leaf) || resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("served certificate or version unexpected: %v", resp.TLS.Version)
	}

	// The system roots do not know the CA.
	system := &http.Client{Transport: &http.Transport{}}
	if resp, err := system.Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Fatal("client with the system roots accepted the server")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("system roots: %v, want a certificate error", err)
	}

	// Nor does TLS 1.1 get through.
	old := b.ClientTLSConfig()
	old.MaxVersion = tls.VersionTLS11
	if resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: old}}).Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Error("TLS 1.1 client accepted")
	}
}

func TestRenewsNearExpiry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, caKey, _, err := loadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Replace the server certificate with one that has 10 days left.
	short, err := issueServer(filepath.Join(dir, serverCertFile), filepath.Join(dir, serverKeyFile),
		ca, caKey, normalizeHosts(defaultHosts), time.Now(), 10*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := LoadOrCreate(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.ServerCert.Leaf.Equal(short.Leaf) || time.Until(renewed.ServerCert.Leaf.NotAfter) < 300*24*time.Hour {
		t.Errorf("certificate expiring %v not renewed (now %v)", short.Leaf.NotAfter, renewed.ServerCert.Leaf.NotAfter)
	}
	if !bytes.Equal(renewed.CACertPEM, b.CACertPEM) {
		t.Error("renewal replaced the CA")
	}

	// A mismatched pair (crash between the two renames) is reissued too.
	if err := os.WriteFile(filepath.Join(dir, serverKeyFile), mustKeyPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, nil); err != nil {
		t.Errorf("mismatched server pair: %v", err)
	}
}

func TestHalfCAIsAnError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, caKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, nil); err == nil {
		t.Fatal("LoadOrCreate replaced a CA whose key is missing")
	}
}

func TestNormalizeHosts(t *testing.T) {
	t.Parallel()
	got := normalizeHosts([]string{" Example.TEST ", "::0001", "127.0.0.1", "", "example.test", "10.0.0.1"})
	want := []string{"10.0.0.1", "127.0.0.1", "::1", "example.test"}
	if !slices.Equal(got, want) {
		t.Errorf("normalizeHosts = %q, want %q", got, want)
	}
}

func parseCA(t *testing.T, b *Bundle) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b.CACertPEM)
	if block == nil {
		t.Fatal("CACertPEM holds no PEM block")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ServerCert.Leaf.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("server certificate not signed by the CA: %v", err)
	}
	return ca
}

func mustKeyPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := encodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

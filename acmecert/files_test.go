package acmecert

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zenconn/server/internal/testca"
)

func TestValidToken(t *testing.T) {
	for tok, want := range map[string]bool{
		"abcXYZ09-_":             true,
		strings.Repeat("a", 128): true,
		strings.Repeat("a", 129): false,
		"":                       false,
		"../x":                   false,
		"a.b":                    false,
		"a%2f":                   false,
		"a b":                    false,
		"\x00":                   false,
		"évidemment":             false,
	} {
		if got := ValidToken(tok); got != want {
			t.Errorf("ValidToken(%q) = %v, want %v", tok, got, want)
		}
	}
}

func TestHTTP01Files(t *testing.T) {
	dir := t.TempDir()
	if err := writeFile(filepath.Join(dir, http01Dir, "tok_1"), []byte("tok_1.thumb")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("no"), 0o600); err != nil {
		t.Fatal(err)
	}
	get := HTTP01(dir)
	if b, ok := get("tok_1"); !ok || string(b) != "tok_1.thumb" {
		t.Fatalf("tok_1: %q %v", b, ok)
	}
	for _, tok := range []string{"tok_2", "../secret", "", strings.Repeat("b", 200)} {
		if b, ok := get(tok); ok {
			t.Errorf("%q answered %q", tok, b)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, http01Dir, "tok_1"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi, err)
	}
}

func TestCertificateFile(t *testing.T) {
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	b := append(append([]byte(nil), ca.KeyPEM...), ca.CertPEM...)
	cert, err := parseCertificate(b, time.Now())
	if err != nil || cert.Leaf == nil || len(cert.Certificate) != 2 {
		t.Fatalf("parse: %v", err)
	}
	if _, err := parseCertificate(b, time.Now().Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired certificate loaded: %v", err)
	}
	if _, err := parseCertificate(ca.CertPEM, time.Now()); err == nil {
		t.Fatal("a certificate without its key loaded")
	}
	leaf := &x509.Certificate{NotBefore: time.Unix(0, 0), NotAfter: time.Unix(90, 0)}
	if got := RenewAt(leaf); !got.Equal(time.Unix(60, 0)) {
		t.Fatalf("RenewAt = %v, want 60 s in", got.Unix())
	}
}

func TestChallengeConfig(t *testing.T) {
	dir := t.TempDir()
	get := ChallengeConfig(dir, []string{"a.example.com"})
	if cfg, err := get(&tls.ClientHelloInfo{ServerName: "a.example.com", SupportedProtos: []string{"http/1.1"}}); cfg != nil || err != nil {
		t.Fatalf("a plain hello got %v %v", cfg, err)
	}
	if cfg, err := get(&tls.ClientHelloInfo{ServerName: "a.example.com", SupportedProtos: []string{"http/1.1", acmeALPN}}); cfg != nil || err != nil {
		t.Fatalf("a hello offering more than acme-tls/1 got %v %v", cfg, err)
	}
	acmeHello := &tls.ClientHelloInfo{ServerName: "a.example.com", SupportedProtos: []string{acmeALPN}}
	if _, err := get(acmeHello); err == nil {
		t.Fatal("acme-tls/1 without a pending challenge succeeded")
	}
	if _, err := get(&tls.ClientHelloInfo{ServerName: "../x", SupportedProtos: []string{acmeALPN}}); err == nil {
		t.Fatal("acme-tls/1 for another name succeeded")
	}
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(filepath.Join(dir, alpnDir, "a.example.com.pem"), append(ca.KeyPEM, ca.CertPEM...)); err != nil {
		t.Fatal(err)
	}
	cfg, err := get(acmeHello)
	if err != nil || len(cfg.Certificates) != 1 || cfg.NextProtos[0] != acmeALPN {
		t.Fatalf("acme-tls/1: %v %v", cfg, err)
	}
}

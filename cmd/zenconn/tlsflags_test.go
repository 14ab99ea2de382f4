package main

import (
	"crypto/tls"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zenconn/server/internal/testca"
)

func writeTemp(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTLSFlagsChecked runs the flag check of zenconn serve with good and
// bad TLS files: every bad one stops the start with the flag's name.
func TestTLSFlagsChecked(t *testing.T) {
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	other, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert := writeTemp(t, dir, "cert.pem", ca.CertPEM)
	key := writeTemp(t, dir, "key.pem", ca.KeyPEM)
	otherKey := writeTemp(t, dir, "other-key.pem", other.KeyPEM)
	garbage := writeTemp(t, dir, "garbage.pem", []byte("not a certificate\n"))
	keyAsCert := writeTemp(t, dir, "key-as-cert.pem", ca.KeyPEM)
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name string
		args []string
		want string // "" for no error
	}{
		{"good", []string{"--tls-cert", cert, "--tls-key", key}, ""},
		{"good 1.3", []string{"--tls-cert", cert, "--tls-key", key, "--tls-min-version", "1.3"}, ""},
		{"cert alone", []string{"--tls-cert", cert}, "--tls-key: needed"},
		{"key alone", []string{"--tls-key", key}, "--tls-cert: needed"},
		{"cert missing", []string{"--tls-cert", missing, "--tls-key", key}, "--tls-cert: open"},
		{"key missing", []string{"--tls-cert", cert, "--tls-key", missing}, "--tls-key: open"},
		{"cert garbage", []string{"--tls-cert", garbage, "--tls-key", key}, "--tls-cert: no PEM certificate"},
		{"key in the cert file", []string{"--tls-cert", keyAsCert, "--tls-key", key}, "--tls-cert: " + keyAsCert + " holds a"},
		{"key garbage", []string{"--tls-cert", cert, "--tls-key", garbage}, "--tls-key: " + garbage},
		{"key not matching", []string{"--tls-cert", cert, "--tls-key", otherKey}, "--tls-key: the key in " + otherKey + " does not match"},
		{"client CA", []string{"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", writeTemp(t, dir, "ca.pem", ca.CAPEM)}, ""},
		{"client CA without TLS", []string{"--tls-client-ca", cert}, "--tls-client-ca: needs --tls-cert"},
		{"client CA missing", []string{"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", missing}, "--tls-client-ca: open"},
		{"client CA garbage", []string{"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", garbage}, "--tls-client-ca: no PEM certificate"},
		{"client CA a key", []string{"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", keyAsCert}, "--tls-client-ca: " + keyAsCert + " holds a"},
		{"bad version", []string{"--tls-cert", cert, "--tls-key", key, "--tls-min-version", "1.1"}, `--tls-min-version: "1.1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o serveOptions
			fs := newServeFlags(&o)
			fs.SetOutput(io.Discard)
			if err := fs.Parse(append(tc.args, "--data", t.TempDir(), "--public", "off")); err != nil {
				t.Fatal(err)
			}
			_, _, err := checkServeFlags(fs, &o)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if tc.want != "" {
				return
			}
			cfg, certs, err := tlsConfig(&o.tls)
			if err != nil || cfg == nil || certs == nil || cfg.GetCertificate == nil || cfg.NextProtos[0] != "http/1.1" {
				t.Fatalf("config %+v, %v", cfg, err)
			}
			if c, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "unknown.example"}); err != nil || c.Leaf.SerialNumber.Cmp(ca.Server.Leaf.SerialNumber) != 0 {
				t.Fatalf("certificate for an unknown name: %v", err)
			}
			if (o.tls.clientCA != "") != (cfg.ClientAuth == tls.RequireAndVerifyClientCert && cfg.ClientCAs != nil) {
				t.Fatalf("client auth %v with --tls-client-ca %q", cfg.ClientAuth, o.tls.clientCA)
			}
			if want := map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}[o.tls.minVersion]; cfg.MinVersion != want {
				t.Fatalf("min version %x, want %x", cfg.MinVersion, want)
			}
		})
	}
}

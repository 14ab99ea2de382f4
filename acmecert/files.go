// Package acmecert obtains and renews a node's TLS certificate from an
// ACME CA (RFC 8555) and shares it, and the answers to the CA's
// challenges, with the worker processes through files.
//
// One process talks to the CA: the node's agent (Manager.Run). It keeps
// everything under one folder, <data>/acme:
//
//	account.pem            the ACME account's key
//	certificate.pem        the certificate's private key, then its chain
//	http-01/<token>        the key authorization of a pending HTTP-01 challenge
//	tls-alpn-01/<name>.pem the certificate of a pending TLS-ALPN-01 challenge
//
// Every file is written to a temporary name and renamed, mode 0600, so a
// reader sees the old file or the new one, whole. The workers read them
// and never order anything: they serve certificate.pem (reloaded when it
// changes, see engine.CertFiles), answer GET
// /.well-known/acme-challenge/<token> from http-01/ (HTTP01) and a
// handshake offering ALPN "acme-tls/1" from tls-alpn-01/ (ChallengeConfig).
package acmecert

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File and folder names under the folder of Manager and of the readers.
const (
	certFile    = "certificate.pem"
	accountFile = "account.pem"
	http01Dir   = "http-01"
	alpnDir     = "tls-alpn-01"
)

// maxFile bounds what a reader takes from one of these files: a chain of a
// few certificates and a key are a few KiB.
const maxFile = 64 << 10

// MaxTokenLen bounds the token of an HTTP-01 request; a CA's tokens are
// 43 characters (32 random bytes in base64url).
const MaxTokenLen = 128

// CertPath is the certificate file (key and chain) in dir.
func CertPath(dir string) string { return filepath.Join(dir, certFile) }

// LoadCertificate reads a certificate file Manager wrote: the key and the
// chain in one PEM file. A certificate that has expired is refused.
func LoadCertificate(path string) (tls.Certificate, error) {
	b, err := readSmall(path)
	if err != nil {
		return tls.Certificate{}, err
	}
	return parseCertificate(b, time.Now())
}

func parseCertificate(b []byte, now time.Time) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(b, b)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return tls.Certificate{}, err
	}
	if now.After(leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("the certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	cert.Leaf = leaf
	return cert, nil
}

// readSmall reads a file of at most maxFile bytes.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFile)
	}
	return b, nil
}

// ValidToken tells whether token can be an ACME challenge token: base64url
// characters only (RFC 8555 section 8.1), 1 to MaxTokenLen of them. Only
// such tokens become file names.
func ValidToken(token string) bool {
	if token == "" || len(token) > MaxTokenLen {
		return false
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// HTTP01 returns the answer to GET /.well-known/acme-challenge/<token>
// from the files Manager keeps in dir: the key authorization of a pending
// challenge, or false.
func HTTP01(dir string) func(token string) ([]byte, bool) {
	return func(token string) ([]byte, bool) {
		if !ValidToken(token) {
			return nil, false
		}
		b, err := readSmall(filepath.Join(dir, http01Dir, token))
		if err != nil {
			return nil, false
		}
		return b, true
	}
}

// ChallengeConfig returns a tls.Config.GetConfigForClient that answers a
// TLS-ALPN-01 challenge (RFC 8737): a ClientHello offering ALPN
// "acme-tls/1" alone (as validators do, section 3) for one of domains gets
// the challenge certificate Manager wrote in dir, or fails when there is
// none. Every other ClientHello gets the server's configuration (nil).
func ChallengeConfig(dir string, domains []string) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	known := make(map[string]bool, len(domains))
	for _, d := range domains {
		known[d] = true
	}
	return func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if !offersACME(hello.SupportedProtos) {
			return nil, nil
		}
		name := strings.ToLower(hello.ServerName)
		if !known[name] {
			return nil, errors.New("acme-tls/1: not a domain of this node")
		}
		b, err := readSmall(filepath.Join(dir, alpnDir, name+".pem"))
		if err != nil {
			return nil, errors.New("acme-tls/1: no challenge pending")
		}
		cert, err := tls.X509KeyPair(b, b)
		if err != nil {
			return nil, err
		}
		return &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{acmeALPN},
			MinVersion:   tls.VersionTLS12,
		}, nil
	}
}

const acmeALPN = "acme-tls/1"

func offersACME(protos []string) bool { return len(protos) == 1 && protos[0] == acmeALPN }

// writeFile writes b to path through a temporary file and a rename, mode
// 0600.
func writeFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/zenconn/server/engine"
)

// tlsOptions are the TLS flags of "zenconn serve".
type tlsOptions struct {
	cert, key  string
	minVersion string
	addr       string // --tls-addr
	redirect   bool   // --tls-redirect
	hsts       time.Duration
	clientCA   string // --tls-client-ca
	handshakes int    // --max-tls-handshakes
}

func registerTLSFlags(fs *flag.FlagSet, o *tlsOptions) {
	fs.StringVar(&o.cert, "tls-cert", "", "PEM file with the server certificate, then any intermediate certificates; with --tls-key, --addr serves TLS (https://, wss://). Reloaded with --tls-key on SIGHUP and when either file changes; a pair that fails to load then is refused and the certificate in use stays")
	fs.StringVar(&o.key, "tls-key", "", "PEM file with the private key of --tls-cert")
	fs.StringVar(&o.minVersion, "tls-min-version", "1.2", `oldest TLS version accepted: "1.2" or "1.3"`)
	fs.StringVar(&o.addr, "tls-addr", "", "second address, served with TLS (--tls-cert, --tls-key) by the same workers, while --addr stays plain; port 0 picks a free port. Empty: --addr serves TLS when --tls-cert is set")
	fs.StringVar(&o.clientCA, "tls-client-ca", "", "PEM file of the CA certificates that sign client certificates: with it every TLS client must present a certificate signed by one of them (tls.RequireAndVerifyClientCert), else its handshake fails. Reloaded with --tls-cert on SIGHUP and when it changes; a file that fails to load then is refused and the CAs in use stay")
	fs.IntVar(&o.handshakes, "max-tls-handshakes", engine.DefaultMaxTLSHandshakes, fmt.Sprintf("TLS handshakes in progress at once in each worker process (each holds a goroutine until it ends, at most --handshake-timeout); a connection whose ClientHello comes past it is closed. 1 to %d", engine.MaxTLSHandshakesLimit))
	fs.DurationVar(&o.hsts, "hsts", 0, "with TLS, send Strict-Transport-Security: max-age=<this, in seconds> on every HTTP response over TLS (files, errors, /healthz, the API; never over plain text), e.g. 8760h for a year; 0: off")
	fs.BoolVar(&o.redirect, "tls-redirect", false, "answer every plain-text request on --addr but /healthz and /metrics, WebSocket handshakes included, with 308 to the same URI on https:// at --tls-addr's port (needs --tls-addr)")
}

// tlsConfig loads the certificate and key named by the flags and returns
// the engine's TLS configuration and the files it reloads its certificate
// from, nil when TLS is off. Every error names its flag.
func tlsConfig(o *tlsOptions) (*tls.Config, *engine.CertFiles, error) {
	var minVersion uint16
	switch o.minVersion {
	case "1.2":
		minVersion = tls.VersionTLS12
	case "1.3":
		minVersion = tls.VersionTLS13
	default:
		return nil, nil, fmt.Errorf("--tls-min-version: %q is neither 1.2 nor 1.3", o.minVersion)
	}
	if o.handshakes < 1 || o.handshakes > engine.MaxTLSHandshakesLimit {
		return nil, nil, fmt.Errorf("--max-tls-handshakes: %d is outside 1..%d", o.handshakes, engine.MaxTLSHandshakesLimit)
	}
	switch {
	case o.cert == "" && o.key == "" && o.clientCA != "":
		return nil, nil, errors.New("--tls-client-ca: needs --tls-cert and --tls-key")
	case o.cert == "" && o.key == "":
		return nil, nil, nil
	case o.cert == "":
		return nil, nil, errors.New("--tls-cert: needed with --tls-key")
	case o.key == "":
		return nil, nil, errors.New("--tls-key: needed with --tls-cert")
	}
	certs, err := engine.NewCertFiles(o.cert, o.key, func() (tls.Certificate, error) {
		return loadCertificate(o.cert, o.key)
	})
	if err != nil {
		return nil, nil, err
	}
	if o.clientCA != "" {
		file := o.clientCA
		if err := certs.SetClientCAs(file, func() (*x509.CertPool, error) { return loadClientCAs(file) }); err != nil {
			return nil, nil, err
		}
	}
	return certs.TLSConfig(minVersion), certs, nil
}

// loadClientCAs reads the CA certificates of --tls-client-ca.
func loadClientCAs(file string) (*x509.CertPool, error) {
	return certPool("--tls-client-ca", file, x509.NewCertPool())
}

// certPool adds the PEM certificates of file, named by flag, to pool.
func certPool(flag, file string, pool *x509.CertPool) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	certs, err := parseCerts(flag, file, b)
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// parseCerts parses the PEM certificates of file, for flag: at least one,
// and nothing but certificates.
func parseCerts(flag, file string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: %s holds a %q block; only certificates belong there", flag, file, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", flag, file, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in %s", flag, file)
	}
	return certs, nil
}

// loadCertificate reads and checks the certificate chain and its key.
func loadCertificate(certFile, keyFile string) (tls.Certificate, error) {
	var none tls.Certificate
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return none, fmt.Errorf("--tls-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return none, fmt.Errorf("--tls-key: %w", err)
	}
	leaf, err := parseLeaf(certFile, certPEM)
	if err != nil {
		return none, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	switch {
	case err != nil && strings.Contains(err.Error(), "does not match"):
		return none, fmt.Errorf("--tls-key: the key in %s does not match the certificate in %s", keyFile, certFile)
	case err != nil:
		return none, fmt.Errorf("--tls-key: %s: %w", keyFile, err)
	}
	cert.Leaf = leaf
	return cert, nil
}

// parseLeaf parses every certificate of a PEM chain and returns the first,
// refusing a chain whose first certificate is not valid now.
func parseLeaf(file string, certPEM []byte) (*x509.Certificate, error) {
	certs, err := parseCerts("--tls-cert", file, certPEM)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("--tls-cert: the certificate in %s is valid from %s to %s only",
			file, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return leaf, nil
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zenconn/server/acmecert"
	"github.com/zenconn/server/engine"
)

// acmeOptions are the --acme-* flags of "zenconn serve": certificates
// obtained and renewed from an ACME CA by the agent (package acmecert),
// served by every worker from <data>/acme.
type acmeOptions struct {
	domains    domainList
	email      string
	directory  string
	ca         string
	challenges string
}

// maxACMEDomains is the most names one certificate carries (Let's
// Encrypt's limit).
const maxACMEDomains = 100

func registerACMEFlags(fs *flag.FlagSet, o *acmeOptions) {
	fs.Var(&o.domains, "acme-domain", "domain name of the TLS certificate obtained and renewed from an ACME CA (--acme-directory); repeat it or give a comma list for more names on the same certificate. The agent orders it, keeps it in <data>/acme and renews it when a third of its lifetime is left; every worker serves it. Not with --tls-cert/--tls-key")
	fs.StringVar(&o.email, "acme-email", "", "contact e-mail address of the ACME account (optional)")
	fs.StringVar(&o.directory, "acme-directory", acmecert.LetsEncrypt, "ACME directory URL (https://) of the CA that issues --acme-domain's certificate")
	fs.StringVar(&o.ca, "acme-ca", "", "PEM file of CA certificates trusted, beside the system's, for the TLS of --acme-directory (a private or test CA)")
	fs.StringVar(&o.challenges, "acme-challenge", "tls-alpn-01,http-01", "ACME challenge types in the order they are tried: tls-alpn-01 (answered on the TLS port, which the CA reaches on 443) and http-01 (answered on the plain --addr, which the CA reaches on 80; needs --tls-addr, and is left out of the list without it)")
}

// domainList is a repeatable flag of comma-separated domain names.
type domainList []string

func (d *domainList) String() string { return strings.Join(*d, ",") }

func (d *domainList) Set(s string) error {
	for _, name := range strings.Split(s, ",") {
		*d = append(*d, strings.ToLower(strings.TrimSpace(name)))
	}
	return nil
}

// acmePlan is the checked ACME configuration.
type acmePlan struct {
	dir        string // <data>/acme
	domains    []string
	challenges []string
	roots      *x509.CertPool
}

// checkACME checks the --acme-* flags against each other and the TLS
// flags; nil without --acme-domain. Every error names its flag.
func checkACME(o *serveOptions) (*acmePlan, error) {
	a := &o.acme
	if len(a.domains) == 0 {
		switch {
		case a.email != "":
			return nil, errors.New("--acme-email: needs --acme-domain")
		case a.ca != "":
			return nil, errors.New("--acme-ca: needs --acme-domain")
		}
		return nil, nil
	}
	if o.tls.cert != "" || o.tls.key != "" {
		return nil, errors.New("--acme-domain: the certificate comes either from the CA or from --tls-cert and --tls-key, not both")
	}
	if o.tls.clientCA != "" {
		return nil, errors.New("--tls-client-ca: not with --acme-domain (the CA validates the domain without a client certificate)")
	}
	p := &acmePlan{dir: filepath.Join(o.data, "acme")}
	var err error
	if p.domains, err = checkDomains(a.domains); err != nil {
		return nil, err
	}
	if a.email != "" {
		if addr, err := mail.ParseAddress(a.email); err != nil || addr.Address != a.email {
			return nil, fmt.Errorf("--acme-email: %q is not an e-mail address", a.email)
		}
	}
	if u, err := url.Parse(a.directory); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--acme-directory: %q is not an https:// URL", a.directory)
	}
	if p.challenges, err = checkChallenges(a.challenges, o.tls.addr != ""); err != nil {
		return nil, err
	}
	if a.ca != "" {
		if p.roots, err = acmeRoots(a.ca); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// checkDomains checks the names of --acme-domain: host names of letters,
// digits and hyphens with at least two labels, no IP address, no
// wildcard, no repeat, at most maxACMEDomains.
func checkDomains(names []string) ([]string, error) {
	if len(names) > maxACMEDomains {
		return nil, fmt.Errorf("--acme-domain: %d names; a certificate carries at most %d", len(names), maxACMEDomains)
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if err := checkDomain(n); err != nil {
			return nil, fmt.Errorf("--acme-domain: %q %w", n, err)
		}
		if seen[n] {
			return nil, fmt.Errorf("--acme-domain: %q is given twice", n)
		}
		seen[n] = true
	}
	return names, nil
}

func checkDomain(n string) error {
	if n == "" || len(n) > 253 {
		return errors.New("is not a domain name (1 to 253 characters)")
	}
	if net.ParseIP(n) != nil {
		return errors.New("is an IP address; ACME certificates here are for domain names")
	}
	labels := strings.Split(n, ".")
	if len(labels) < 2 {
		return errors.New("has a single label; the CA issues for full domain names (example.com)")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("is not a domain name (empty, long or hyphen-edged label)")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("has %q: only letters, digits, hyphens and dots (no wildcard)", c)
			}
		}
	}
	return nil
}

// checkChallenges parses --acme-challenge; http-01 needs a plain listener
// (--tls-addr, so that --addr stays plain) and is dropped without one.
func checkChallenges(list string, plain bool) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, c := range strings.Split(list, ",") {
		c = strings.TrimSpace(c)
		switch {
		case c != acmecert.TLSALPN01 && c != acmecert.HTTP01Type:
			return nil, fmt.Errorf("--acme-challenge: %q is neither tls-alpn-01 nor http-01", c)
		case seen[c]:
			return nil, fmt.Errorf("--acme-challenge: %s is given twice", c)
		}
		seen[c] = true
		if c == acmecert.HTTP01Type && !plain {
			continue
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("--acme-challenge: http-01 needs a plain listener: give --tls-addr (then --addr stays plain), or use tls-alpn-01")
	}
	return out, nil
}

// acmeRoots is the system's roots and the certificates of --acme-ca.
func acmeRoots(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	return certPool("--acme-ca", file, pool)
}

// applyACME makes cfg serve the certificate in <data>/acme (none until
// the agent obtained it: TLS handshakes fail meanwhile), answer the CA's
// challenges from the files there, and reload the certificate when it
// changes. Nothing happens without --acme-domain.
func applyACME(cfg *engine.Config, o *serveOptions) error {
	p, err := checkACME(o)
	if p == nil || err != nil {
		return err
	}
	minVersion := uint16(tls.VersionTLS12)
	if o.tls.minVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	path := acmecert.CertPath(p.dir)
	certs := engine.NewCertFilesPending(path, path, func() (tls.Certificate, error) {
		return acmecert.LoadCertificate(path)
	})
	cfg.TLS = certs.TLSConfig(minVersion)
	cfg.TLS.GetConfigForClient = acmecert.ChallengeConfig(p.dir, p.domains)
	cfg.TLSCertificates = certs
	cfg.ACMEHTTP01 = acmecert.HTTP01(p.dir)
	return nil
}

// startACME starts obtaining and renewing the certificate of
// --acme-domain, in the agent only, once served is closed (the workers
// listen: the CA's validation reaches them); stop ends it. Without
// --acme-domain it does nothing.
func startACME(o *serveOptions, served <-chan struct{}, reg prometheus.Registerer, log *slog.Logger) (stop func(), err error) {
	p, err := checkACME(o)
	if p == nil || err != nil {
		return func() {}, err
	}
	m := acmecert.New(acmecert.Config{
		Dir: p.dir, Domains: p.domains, Email: o.acme.email, Directory: o.acme.directory,
		Roots: p.roots, Challenges: p.challenges, Log: log, Registerer: reg,
	})
	log.Info("ACME: certificates from the CA", "directory", o.acme.directory, "domains", p.domains,
		"challenges", strings.Join(p.challenges, ","), "cache", p.dir)
	m.Cached()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-served:
		case <-ctx.Done():
			return
		}
		m.Run(ctx)
	}()
	return func() { cancel(); <-done }, nil
}

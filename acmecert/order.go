package acmecert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/acme"
)

// order runs one order answering its challenges with type typ, and writes
// the certificate with a new key.
func (m *Manager) order(ctx context.Context, typ string) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, orderTimeout)
	defer cancel()
	start := time.Now()
	o, err := m.client.AuthorizeOrder(ctx, acme.DomainIDs(m.cfg.Domains...))
	if err != nil {
		return nil, fmt.Errorf("new order: %w", err)
	}
	for _, u := range o.AuthzURLs {
		if err := m.authorize(ctx, u, typ); err != nil {
			return nil, err
		}
	}
	uri := o.URI
	if o, err = m.client.WaitOrder(ctx, uri); err != nil {
		return nil, fmt.Errorf("order %s: %w", uri, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: m.cfg.Domains[0]}, DNSNames: m.cfg.Domains,
	}, key)
	if err != nil {
		return nil, err
	}
	chain, _, err := m.client.CreateCertFromOrder(ctx, o, csr, true)
	if err != nil {
		return nil, fmt.Errorf("finalizing order %s: %w", uri, err)
	}
	leaf, err := m.save(key, chain)
	if err != nil {
		return nil, err
	}
	m.cfg.Log.Info("ACME: certificate obtained", "challenge", typ, "domains", m.cfg.Domains,
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"renew_at", RenewAt(leaf).UTC().Format(time.RFC3339), "took", time.Since(start).Round(time.Millisecond).String())
	return leaf, nil
}

// save checks the chain the CA returned against key and the domains and
// writes it with the key to the certificate file.
func (m *Manager) save(key *ecdsa.PrivateKey, chain [][]byte) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("the CA returned no certificate")
	}
	b, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	for _, der := range chain {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	cert, err := parseCertificate(b, time.Now())
	if err != nil {
		return nil, fmt.Errorf("the CA's certificate: %w", err)
	}
	if !m.covers(cert.Leaf) {
		return nil, fmt.Errorf("the CA's certificate does not cover %v", m.cfg.Domains)
	}
	if err := writeFile(CertPath(m.cfg.Dir), b); err != nil {
		return nil, fmt.Errorf("writing the certificate: %w", err)
	}
	return cert.Leaf, nil
}

// authorize answers the challenge of type typ of the authorization at u,
// if it is still pending, and waits for its outcome; the files of the
// challenge are removed afterwards.
func (m *Manager) authorize(ctx context.Context, u, typ string) error {
	z, err := m.client.GetAuthorization(ctx, u)
	if err != nil {
		return fmt.Errorf("authorization %s: %w", u, err)
	}
	if z.Status == acme.StatusValid {
		return nil
	}
	var chal *acme.Challenge
	for _, c := range z.Challenges {
		if c.Type == typ {
			chal = c
			break
		}
	}
	if chal == nil {
		return fmt.Errorf("the CA offers no %s challenge for %s", typ, z.Identifier.Value)
	}
	if !ValidToken(chal.Token) {
		return fmt.Errorf("the CA's %s token for %s is not base64url", typ, z.Identifier.Value)
	}
	file, err := m.prepare(typ, chal.Token, z.Identifier.Value)
	if err != nil {
		return err
	}
	defer os.Remove(file)
	if _, err := m.client.Accept(ctx, chal); err != nil {
		return fmt.Errorf("accepting the %s challenge for %s: %w", typ, z.Identifier.Value, err)
	}
	if _, err := m.client.WaitAuthorization(ctx, z.URI); err != nil {
		return fmt.Errorf("%s challenge for %s: %w", typ, z.Identifier.Value, err)
	}
	return nil
}

// prepare writes the file the workers answer the challenge from and
// returns its path.
func (m *Manager) prepare(typ, token, domain string) (string, error) {
	var path string
	var b []byte
	switch typ {
	case HTTP01Type:
		ka, err := m.client.HTTP01ChallengeResponse(token)
		if err != nil {
			return "", err
		}
		path, b = filepath.Join(m.cfg.Dir, http01Dir, token), []byte(ka)
	case TLSALPN01:
		cert, err := m.client.TLSALPN01ChallengeCert(token, domain)
		if err != nil {
			return "", err
		}
		signer, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return "", errors.New("tls-alpn-01: unexpected key type")
		}
		if b, err = encodeKey(signer); err != nil {
			return "", err
		}
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})...)
		path = filepath.Join(m.cfg.Dir, alpnDir, domain+".pem")
	default:
		return "", fmt.Errorf("unknown challenge type %q", typ)
	}
	if err := writeFile(path, b); err != nil {
		return "", fmt.Errorf("writing the %s challenge: %w", typ, err)
	}
	return path, nil
}

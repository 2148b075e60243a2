// Package tlsconfig is the one place sanboot builds TLS configurations:
// for the API server, for the embedded etcd member's client and peer
// listeners, and for every client (sanbootctl, agents, members talking to
// each other). It builds them with etcd's own transport.TLSInfo, so every
// side behaves as etcd does: the certificate and key are read from disk at
// each handshake (a certificate replaced on disk is in use at the next
// connection, without a restart), TLS 1.2 is the minimum, and a server
// that trusts a CA requires and verifies client certificates.
//
// A trusted CA bundle is read once, at start: replacing the CA itself
// needs a restart, as it does for etcd.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// Files names the PEM files of one end of a TLS link.
type Files struct {
	// CertFile is the certificate presented to the other end.
	CertFile string
	// KeyFile is its private key (keep it 0600).
	KeyFile string
	// TrustedCAFile is the CA bundle the other end's certificate must
	// chain to.
	TrustedCAFile string
}

// Names are the flag names of Files, for error messages.
type Names struct{ Cert, Key, CA string }

// Etcd's flag names: a member's client side (--cert-file ...), its peer
// side (--peer-cert-file ...), and a client's (etcdctl's --cert ...).
var (
	MemberClientNames = Names{"--cert-file", "--key-file", "--trusted-ca-file"}
	MemberPeerNames   = Names{"--peer-cert-file", "--peer-key-file", "--peer-trusted-ca-file"}
	ClientNames       = Names{"--cert", "--key", "--cacert"}
)

// Enabled says whether any file is set: then all three must be.
func (f Files) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.TrustedCAFile != "" }

// Check verifies that f is unset or complete and usable: all three files
// given, the certificate and key a pair, the CA bundle holding at least one
// certificate. Errors name the flags in n.
func (f Files) Check(n Names) error {
	if !f.Enabled() {
		return nil
	}
	var errs []error
	for _, p := range []struct{ flag, path string }{{n.Cert, f.CertFile}, {n.Key, f.KeyFile}, {n.CA, f.TrustedCAFile}} {
		if p.path == "" {
			errs = append(errs, fmt.Errorf("%s is missing: TLS needs %s, %s and %s together", p.flag, n.Cert, n.Key, n.CA))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if _, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile); err != nil {
		return fmt.Errorf("%s %s with %s %s: %w (make them with sanbootctl pki issue)", n.Cert, f.CertFile, n.Key, f.KeyFile, err)
	}
	if _, err := LoadCAs(f.TrustedCAFile); err != nil {
		return fmt.Errorf("%s: %w", n.CA, err)
	}
	return nil
}

// Info is f as etcd's TLSInfo; clientCertAuth makes a server require and
// verify client certificates (it does anyway when a CA is trusted).
func (f Files) Info(clientCertAuth bool) transport.TLSInfo {
	return transport.TLSInfo{CertFile: f.CertFile, KeyFile: f.KeyFile, TrustedCAFile: f.TrustedCAFile, ClientCertAuth: clientCertAuth}
}

// Server is the configuration of a server that requires a client
// certificate signed by the trusted CA (mutual TLS).
func (f Files) Server() (*tls.Config, error) {
	if !f.Enabled() {
		return nil, errors.New("no TLS files configured")
	}
	if err := f.Check(MemberClientNames); err != nil {
		return nil, err
	}
	c, err := f.Info(true).ServerConfig()
	if err != nil {
		return nil, fmt.Errorf("TLS server configuration from %s and %s: %w", f.CertFile, f.KeyFile, err)
	}
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c, nil
}

// Client is the configuration of a client that presents its certificate
// and verifies the server's against the trusted CA. The server name is
// left empty: the dialer sets it per endpoint (see package dial).
func (f Files) Client() (*tls.Config, error) {
	if !f.Enabled() {
		return nil, errors.New("no TLS files configured")
	}
	if err := f.Check(ClientNames); err != nil {
		return nil, err
	}
	c, err := f.Info(false).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("TLS client configuration from %s and %s: %w", f.CertFile, f.KeyFile, err)
	}
	return c, nil
}

// LoadCAs reads a PEM bundle of CA certificates.
func LoadCAs(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return out, nil
}

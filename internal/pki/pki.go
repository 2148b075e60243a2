// Package pki makes sanboot's certificate authority and the certificates
// of its members, agents and users (sanbootctl pki), and reads a caller's
// identity back from a verified certificate (the API's authorization).
//
// Identity is encoded in the certificate's subject:
//
//	CN = the name (a member's --name, an agent's --name, a user's name;
//	     etcd's client-certificate authentication takes the CN as its
//	     user name)
//	OU = the role: member, agent, user or admin (one value)
//	O  = the projects a user belongs to (one value each; none for
//	     members and agents; an admin may have some, but sees all)
//
// Keys are ECDSA P-256. A member's certificate serves (API, etcd client
// and peer listeners) and is a client (to its peers), and always names
// localhost, 127.0.0.1 and ::1 besides the --ip and --dns given; agents'
// and users' certificates are client certificates only.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sanboot/sanboot/api"
)

// Role is what a certificate's holder is.
type Role string

// The roles.
const (
	RoleMember Role = "member"
	RoleAgent  Role = "agent"
	RoleUser   Role = "user"
	RoleAdmin  Role = "admin"
)

// Identity is who holds a certificate.
type Identity struct {
	Name     string
	Role     Role
	Projects []string
}

func (id Identity) String() string {
	s := string(id.Role) + " " + id.Name
	if len(id.Projects) > 0 {
		s += " (projects " + strings.Join(id.Projects, ",") + ")"
	}
	return s
}

// Validate checks an identity before it goes into a certificate.
func (id Identity) Validate() error {
	var errs []error
	if err := api.ValidateName(string(id.Role)+" name", id.Name); err != nil {
		errs = append(errs, err)
	}
	switch id.Role {
	case RoleMember, RoleAgent:
		if len(id.Projects) > 0 {
			errs = append(errs, fmt.Errorf("a %s belongs to no project", id.Role))
		}
	case RoleUser:
		if len(id.Projects) == 0 {
			errs = append(errs, errors.New("a user needs at least one --project (or --admin)"))
		}
	case RoleAdmin:
	default:
		errs = append(errs, fmt.Errorf("role %q: use member, agent, user or admin", id.Role))
	}
	for _, p := range id.Projects {
		if err := api.ValidateName("project", p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// IdentityOf reads the identity of a certificate that was verified
// against the CA (the caller's job).
func IdentityOf(c *x509.Certificate) (Identity, error) {
	if len(c.Subject.OrganizationalUnit) != 1 {
		return Identity{}, fmt.Errorf("certificate %q has %d roles (OU), want exactly one: issue it with sanbootctl pki issue", c.Subject.CommonName, len(c.Subject.OrganizationalUnit))
	}
	id := Identity{Name: c.Subject.CommonName, Role: Role(c.Subject.OrganizationalUnit[0]), Projects: slices.Clone(c.Subject.Organization)}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("certificate %q: %w", c.Subject.CommonName, err)
	}
	return id, nil
}

// File names in a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Default validities.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
)

// CA is a certificate authority loaded from a directory.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
	Dir  string
}

// Init makes a new CA in dir (created 0700): ca.crt and ca.key (0600). It
// refuses to overwrite an existing CA.
func Init(dir, name string, validity time.Duration, now time.Time) (*CA, error) {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return nil, fmt.Errorf("%s already holds a CA (%s): keep it, or choose another directory", dir, CAKeyFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, OrganizationalUnit: []string{"sanboot CA"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writePair(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile), der, key); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key, Dir: dir}, nil
}

// Load reads the CA in dir.
func Load(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("read the CA certificate: %w (make a CA with sanbootctl pki init %s)", err, dir)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read the CA key: %w (make a CA with sanbootctl pki init %s)", err, dir)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%s: the CA files are not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CACertFile), err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", filepath.Join(dir, CAKeyFile))
	}
	return &CA{Cert: cert, key: signer, Dir: dir}, nil
}

// Request is a certificate to issue.
type Request struct {
	Identity
	// IPs and DNS are the server names of a member (SANs).
	IPs []net.IP
	DNS []string
	// NotBefore defaults to now-5m, Validity to DefaultCertValidity.
	NotBefore time.Time
	Validity  time.Duration
}

// Issue signs a new key pair for req and writes it to certPath and
// keyPath (0600), refusing to overwrite either.
func (ca *CA) Issue(req Request, certPath, keyPath string, now time.Time) (*x509.Certificate, error) {
	if err := req.Identity.Validate(); err != nil {
		return nil, err
	}
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("%s exists: remove it first to issue a new certificate (the old one stays valid until it expires)", p)
		}
	}
	if req.NotBefore.IsZero() {
		req.NotBefore = now.Add(-5 * time.Minute)
	}
	if req.Validity <= 0 {
		req.Validity = DefaultCertValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: req.Name, OrganizationalUnit: []string{string(req.Role)}, Organization: slices.Clone(req.Projects)},
		NotBefore:    req.NotBefore,
		NotAfter:     req.NotBefore.Add(req.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if req.Role == RoleMember {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.IPAddresses = appendIPs(req.IPs, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
		tmpl.DNSNames = appendNames(req.DNS, "localhost")
	} else if len(req.IPs) > 0 || len(req.DNS) > 0 {
		return nil, fmt.Errorf("--ip and --dns are for members (servers); a %s's certificate is a client's", req.Role)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, err
	}
	return cert, nil
}

func appendIPs(ips []net.IP, more ...net.IP) []net.IP {
	out := slices.Clone(ips)
	for _, m := range more {
		if !slices.ContainsFunc(out, m.Equal) {
			out = append(out, m)
		}
	}
	return out
}

func appendNames(names []string, more ...string) []string {
	out := slices.Clone(names)
	for _, m := range more {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// writePair writes the certificate (0644) and the key (0600, created
// exclusively so that an existing key is never replaced).
func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	kf, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write the key: %w", err)
	}
	if err := pem.Encode(kf, &pem.Block{Type: "PRIVATE KEY", Bytes: kder}); err != nil {
		kf.Close()
		os.Remove(keyPath)
		return fmt.Errorf("write %s: %w", keyPath, err)
	}
	if err := kf.Close(); err != nil {
		os.Remove(keyPath)
		return fmt.Errorf("write %s: %w", keyPath, err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyPath)
		return fmt.Errorf("write %s: %w", certPath, err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

// ReadCert reads the first certificate of a PEM file.
func ReadCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for b, rest := pem.Decode(data); b != nil; b, rest = pem.Decode(rest) {
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
	return nil, fmt.Errorf("%s holds no PEM certificate (a key file? pki show reads the .crt)", path)
}

// Describe is what pki show prints: subject, identity, SANs, validity. It
// never prints key material.
func Describe(c *x509.Certificate, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Subject:    %s\n", c.Subject)
	fmt.Fprintf(&b, "Issuer:     %s\n", c.Issuer)
	if c.IsCA {
		fmt.Fprintf(&b, "Role:       certificate authority\n")
	} else if id, err := IdentityOf(c); err == nil {
		fmt.Fprintf(&b, "Name:       %s\n", id.Name)
		fmt.Fprintf(&b, "Role:       %s\n", id.Role)
		if len(id.Projects) > 0 {
			fmt.Fprintf(&b, "Projects:   %s\n", strings.Join(id.Projects, ", "))
		}
	} else {
		fmt.Fprintf(&b, "Identity:   none (%v)\n", err)
	}
	var sans []string
	for _, d := range c.DNSNames {
		sans = append(sans, "DNS:"+d)
	}
	for _, ip := range c.IPAddresses {
		sans = append(sans, "IP:"+ip.String())
	}
	if len(sans) > 0 {
		fmt.Fprintf(&b, "SANs:       %s\n", strings.Join(sans, ", "))
	}
	fmt.Fprintf(&b, "Serial:     %x\n", c.SerialNumber)
	fmt.Fprintf(&b, "Not before: %s\n", c.NotBefore.UTC().Format(time.RFC3339))
	state := "valid"
	switch {
	case now.After(c.NotAfter):
		state = "EXPIRED"
	case now.Before(c.NotBefore):
		state = "not yet valid"
	}
	fmt.Fprintf(&b, "Not after:  %s (%s)\n", c.NotAfter.UTC().Format(time.RFC3339), state)
	return b.String()
}

package dial_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/sanboot/sanboot/internal/dial"
	"github.com/sanboot/sanboot/internal/pki"
	"github.com/sanboot/sanboot/internal/testsecrets"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

// env is a CA in a temporary directory and a health server behind mutual
// TLS on a loopback port, recording the client certificates it saw.
type env struct {
	dir  string
	ca   *pki.CA
	addr string
	// wrongAddr reaches the server at an address its certificate does
	// not name.
	wrongAddr string

	mu   sync.Mutex
	seen []*x509.Certificate
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dir: t.TempDir()}
	var err error
	if e.ca, err = pki.Init(e.dir, "test CA", 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	srv := e.issue(t, pki.Request{Identity: pki.Identity{Name: "cp1", Role: pki.RoleMember}})
	cfg, err := srv.Server()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
				e.mu.Lock()
				e.seen = append(e.seen, ti.State.VerifiedChains[0][0])
				e.mu.Unlock()
			}
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(lis)
	// The same server on an address its certificate does not name.
	other, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	e.wrongAddr = other.Addr().String()
	go gs.Serve(other)
	t.Cleanup(gs.Stop)
	return e
}

func (e *env) issue(t *testing.T, req pki.Request) tlsconfig.Files {
	t.Helper()
	base := filepath.Join(e.dir, string(req.Role)+"-"+req.Name)
	os.Remove(base + ".crt")
	os.Remove(base + ".key")
	if _, err := e.ca.Issue(req, base+".crt", base+".key", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := testsecrets.RecordKeyFiles(base + ".key"); err != nil { // for the suite's scan of the logs
		t.Fatal(err)
	}
	return tlsconfig.Files{CertFile: base + ".crt", KeyFile: base + ".key", TrustedCAFile: filepath.Join(e.dir, pki.CACertFile)}
}

func (e *env) pool(t *testing.T) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(e.ca.Cert)
	return p
}

func (e *env) check(t *testing.T, endpoint string, f *tlsconfig.Files) error {
	t.Helper()
	var cfg *tls.Config
	if f != nil {
		var err error
		if cfg, err = f.Client(); err != nil {
			t.Fatal(err)
		}
	}
	return e.checkConfig(t, endpoint, cfg)
}

func (e *env) checkConfig(t *testing.T, endpoint string, cfg *tls.Config) error {
	t.Helper()
	conn, err := dial.Dial(dial.Options{Endpoints: []string{endpoint}, TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestMutualTLS(t *testing.T) {
	e := newEnv(t)
	user := e.issue(t, pki.Request{Identity: pki.Identity{Name: "alice", Role: pki.RoleUser, Projects: []string{"lab"}}})
	if err := e.check(t, e.addr, &user); err != nil {
		t.Fatalf("a user of the CA was refused: %v", err)
	}

	other := newEnv(t) // another CA
	foreign := other.issue(t, pki.Request{Identity: pki.Identity{Name: "mallory", Role: pki.RoleAdmin}})
	expired := e.issue(t, pki.Request{Identity: pki.Identity{Name: "old", Role: pki.RoleUser, Projects: []string{"lab"}},
		NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour})
	for _, tc := range []struct {
		name     string
		endpoint string
		files    *tlsconfig.Files
		want     string
	}{
		{"no TLS at all", e.addr, nil, "Unavailable"},
		{"no client certificate", e.addr, &tlsconfig.Files{TrustedCAFile: user.TrustedCAFile}, "Unavailable"},
		{"certificate of another CA", e.addr, &tlsconfig.Files{CertFile: foreign.CertFile, KeyFile: foreign.KeyFile, TrustedCAFile: user.TrustedCAFile}, "Unavailable"},
		{"expired certificate", e.addr, &expired, "Unavailable"},
		{"server of another CA", e.addr, &tlsconfig.Files{CertFile: user.CertFile, KeyFile: user.KeyFile, TrustedCAFile: foreign.TrustedCAFile}, "certificate signed by unknown authority"},
		{"wrong SAN for the server", e.wrongAddr, &user, "not 127.0.0.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.files != nil && tc.files.CertFile == "" {
				// tlsconfig refuses half a configuration: prove it, then
				// try the handshake without a certificate.
				if _, err := tc.files.Client(); err == nil || !strings.Contains(err.Error(), "--cert is missing") {
					t.Fatalf("a client configuration without a certificate: %v", err)
				}
				err = e.checkConfig(t, tc.endpoint, &tls.Config{RootCAs: e.pool(t)})
			} else {
				err = e.check(t, tc.endpoint, tc.files)
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestRotation replaces the client's certificate on disk: the next
// connection presents the new one, with no new configuration.
func TestRotation(t *testing.T) {
	e := newEnv(t)
	f := e.issue(t, pki.Request{Identity: pki.Identity{Name: "s1", Role: pki.RoleAgent}})
	cfg, err := f.Client()
	if err != nil {
		t.Fatal(err)
	}
	call := func() *x509.Certificate {
		conn, err := dial.Dial(dial.Options{Endpoints: []string{e.addr}, TLS: cfg})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.seen[len(e.seen)-1]
	}
	first := call()
	e.issue(t, pki.Request{Identity: pki.Identity{Name: "s1", Role: pki.RoleAgent}}) // same files, new certificate
	second := call()
	if first.SerialNumber.Cmp(second.SerialNumber) == 0 {
		t.Fatalf("the server still saw serial %x after the certificate was replaced", first.SerialNumber)
	}
}

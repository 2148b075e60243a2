package controlplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane"
	"github.com/sanboot/sanboot/ctl/cli"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/dial"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/pki"
	"github.com/sanboot/sanboot/internal/syncbuf"
	"github.com/sanboot/sanboot/internal/testsecrets"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

type tlsEnv struct {
	dir string
	ca  *pki.CA
	cfg controlplane.Config
	log *syncbuf.Buffer // the member's log lines
}

func (e *tlsEnv) issue(t *testing.T, kind string, req pki.Request) tlsconfig.Files {
	t.Helper()
	base := filepath.Join(e.dir, kind+"-"+req.Name)
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

// ctl runs sanbootctl against the member with the files of f.
func (e *tlsEnv) ctl(f tlsconfig.Files, args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	full := append([]string{"--endpoints", e.cfg.APIListen, "--timeout", "30s"}, args...)
	if f.CertFile != "" {
		full = append(full, "--cert", f.CertFile, "--key", f.KeyFile, "--cacert", f.TrustedCAFile)
	}
	code = cli.Run(context.Background(), cli.Env{Stdout: &out, Stderr: &errb}, full)
	return out.String(), errb.String(), code
}

// The member over mutual TLS on loopback: etcd's clients and the API need
// a certificate of the CA, and what a caller may do follows its identity.
func TestMutualTLSAndIdentity(t *testing.T) {
	e := &tlsEnv{dir: t.TempDir(), log: &syncbuf.Buffer{}}
	var err error
	if e.ca, err = pki.Init(e.dir, "test CA", 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	member := e.issue(t, "member", pki.Request{Identity: pki.Identity{Name: "cp1", Role: pki.RoleMember}})
	admin := e.issue(t, "user", pki.Request{Identity: pki.Identity{Name: "root", Role: pki.RoleAdmin}})
	alice := e.issue(t, "user", pki.Request{Identity: pki.Identity{Name: "alice", Role: pki.RoleUser, Projects: []string{"a"}}})
	agent := e.issue(t, "agent", pki.Request{Identity: pki.Identity{Name: "s1", Role: pki.RoleAgent}})
	expired := e.issue(t, "user", pki.Request{Identity: pki.Identity{Name: "old", Role: pki.RoleUser, Projects: []string{"a"}},
		NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour})

	cfg := controlplane.DefaultConfig()
	cfg.Member.Name = "cp1"
	cfg.Member.DataDir = t.TempDir()
	addrs := etcdtest.FreeAddrs(t, 3)
	cfg.Member.Client.ListenURLs = []url.URL{{Scheme: "https", Host: addrs[0]}}
	cfg.Member.Peer.ListenURLs = []url.URL{{Scheme: "https", Host: addrs[1]}}
	cfg.Member.Client.TLS, cfg.Member.Peer.TLS = member, member
	cfg.APIListen = addrs[2]
	cfg.BootListen = ""
	cfg.Log = slog.New(slog.NewTextHandler(e.log, nil))
	e.cfg = cfg
	ready := make(chan struct{})
	cfg.OnReady = func() { close(ready) }
	stop := cptest.RunMember(t, cfg)
	defer stop()
	select {
	case <-ready:
	case <-time.After(120 * time.Second):
		t.Fatalf("the member did not become ready; its log:\n%s", e.log)
	}

	// An admin makes an image in projects a and b.
	adminTLS, err := admin.Client()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dial.Dial(dial.Options{Endpoints: []string{cfg.APIListen}, TLS: adminTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := sanbootv1.NewSanbootClient(conn)
	ctx := context.Background()
	for _, p := range []string{"a", "b"} {
		if _, err := c.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
			Metadata: &sanbootv1.ObjectMeta{Project: p, Name: "img"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}}); err != nil {
			t.Fatal(err)
		}
	}
	if out, stderr, code := e.ctl(alice, "get", "images", "-p", "a"); code != 0 || !strings.Contains(out, "img") {
		t.Fatalf("alice listing her project: code %d, %q %q", code, out, stderr)
	}

	etcd, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.Member.Client.ListenURLs[0].String()}, TLS: adminTLS, Logger: zap.NewNop(), DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	nodeCount := func() int64 {
		resp, err := etcd.Get(ctx, api.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}

	for _, tc := range []struct {
		name  string
		files tlsconfig.Files
		args  []string
		want  string
	}{
		{"no client certificate", tlsconfig.Files{}, []string{"get", "images", "-p", "a"}, "Unavailable|connection|EOF"},
		{"expired certificate", expired, []string{"get", "images", "-p", "a"}, "expired|connection|broken pipe"},
		{"agent certificate used as a user", agent, []string{"get", "images", "-p", "a"}, "for users; agent s1 may not call it"},
		{"user of a reads b", alice, []string{"get", "images", "-p", "b"}, `project "b": user alice`},
		{"user of a writes b", alice, []string{"provision", "n1", "--image", "img", "--mac", "52:54:00:00:00:01", "-p", "b"}, `project "b": user alice`},
		{"user lists all projects", alice, []string{"get", "images", "-A"}, "all projects (-A) are for admins"},
		{"user lists agents", alice, []string{"get", "agents"}, "for admins only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := nodeCount()
			out, stderr, code := e.ctl(tc.files, tc.args...)
			if code == 0 {
				t.Fatalf("accepted: %q", out)
			}
			ok := false
			for _, w := range strings.Split(tc.want, "|") {
				ok = ok || strings.Contains(stderr, w)
			}
			if !ok {
				t.Fatalf("stderr %q does not say %q", stderr, tc.want)
			}
			if after := nodeCount(); after != before {
				t.Fatalf("the store changed: %d keys before, %d after", before, after)
			}
			t.Logf("refused: %s", strings.TrimSpace(stderr))
		})
	}
	if !strings.Contains(e.log.String(), "msg=audit method=PutNode caller=alice role=user insecure=false project=b name=n1 code=PermissionDenied") {
		t.Errorf("no audit line for alice's refused PutNode in:\n%s", e.log)
	}
	if !strings.Contains(e.log.String(), "msg=audit method=PutImage caller=root role=admin insecure=false project=a name=img code=OK") {
		t.Errorf("no audit line for the admin's PutImage")
	}

	// A user learns the members' API addresses (client failover).
	{
		cfg, err := alice.Client()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := dial.Dial(dial.Options{Endpoints: []string{e.cfg.APIListen}, TLS: cfg})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := sanbootv1.NewSanbootClient(conn).ListMembers(ctx, &sanbootv1.ListMembersRequest{})
		conn.Close()
		if err != nil || len(resp.GetMembers()) != 1 {
			t.Errorf("a user's ListMembers: %v, %v; want the one member", resp, err)
		}
	}

	// The agents' data path is for agent certificates only.
	readUpload := func(f tlsconfig.Files) error {
		cfg, err := f.Client()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := dial.Dial(dial.Options{Endpoints: []string{e.cfg.APIListen}, TLS: cfg})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st, err := sanbootv1.NewAgentDataClient(conn).ReadUpload(ctx, &sanbootv1.ReadUploadRequest{UploadId: "0123456789abcdef0123456789abcdef"})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	if err := readUpload(admin); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "ReadUpload is for agents") {
		t.Errorf("an admin reading an upload: %v, want PermissionDenied", err)
	}
	if err := readUpload(agent); status.Code(err) == codes.PermissionDenied || err == nil {
		t.Errorf("an agent reading an unknown upload: %v, want an error other than PermissionDenied", err)
	}

	// Rotation: the member's certificate replaced on disk is served at
	// the next connection, without a restart.
	serial := func() string {
		cfg, err := alice.Client()
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerName = "127.0.0.1"
		conn, err := tls.Dial("tcp", e.cfg.APIListen, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	old := serial()
	e.issue(t, "member", pki.Request{Identity: pki.Identity{Name: "cp1", Role: pki.RoleMember}})
	if now := serial(); now == old {
		t.Fatalf("the API still serves certificate %s after it was replaced on disk", old)
	}
	if _, stderr, code := e.ctl(alice, "get", "images", "-p", "a"); code != 0 {
		t.Fatalf("after the rotation: %s", stderr)
	}
}

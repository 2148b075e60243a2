package etcdauth_test

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/controlplane/etcdauth"
	"github.com/sanboot/sanboot/controlplane/member"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
	"github.com/sanboot/sanboot/internal/pki"
	"github.com/sanboot/sanboot/internal/testsecrets"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

// tlsMember is an etcd member over mutual TLS, authorization off; root is
// its client as member cp1, issue makes certificates of its CA, client
// connects with one.
type tlsMember struct {
	root   *clientv3.Client
	issue  func(pki.Identity) tlsconfig.Files
	client func(tlsconfig.Files) *clientv3.Client
}

func startTLSMember(t *testing.T) tlsMember {
	ctx := context.Background()
	dir := t.TempDir()
	ca, err := pki.Init(dir, "test CA", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issue := func(id pki.Identity) tlsconfig.Files {
		base := filepath.Join(dir, string(id.Role)+"-"+id.Name)
		if _, err := ca.Issue(pki.Request{Identity: id}, base+".crt", base+".key", time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := testsecrets.RecordKeyFiles(base + ".key"); err != nil { // for the suite's scan of the logs
			t.Fatal(err)
		}
		return tlsconfig.Files{CertFile: base + ".crt", KeyFile: base + ".key", TrustedCAFile: filepath.Join(dir, pki.CACertFile)}
	}
	mf := issue(pki.Identity{Name: "cp1", Role: pki.RoleMember})
	cfg := member.DefaultConfig()
	cfg.Name, cfg.DataDir = "cp1", t.TempDir()
	addrs := etcdtest.FreeAddrs(t, 2)
	cfg.Client.ListenURLs = []url.URL{{Scheme: "https", Host: addrs[0]}}
	cfg.Peer.ListenURLs = []url.URL{{Scheme: "https", Host: addrs[1]}}
	cfg.Client.TLS, cfg.Peer.TLS = mf, mf
	cfg.Log = cptest.Log(t)
	m, err := member.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	root, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	client := func(f tlsconfig.Files) *clientv3.Client {
		tc, err := f.Client()
		if err != nil {
			t.Fatal(err)
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.Client.ListenURLs[0].String()}, TLS: tc, Logger: zap.NewNop(), DialTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return tlsMember{root: root, issue: issue, client: client}
}

// An etcd member over mutual TLS with authorization on: each agent's
// certificate is an etcd user confined by etcd itself.
func TestAgentsAreConfinedByEtcd(t *testing.T) {
	ctx := context.Background()
	tm := startTLSMember(t)
	root, issue, client := tm.root, tm.issue, tm.client
	if err := etcdauth.Enable(ctx, root, "cp1"); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.Enable(ctx, root, "cp1"); err != nil { // again: idempotent
		t.Fatalf("second Enable: %v", err)
	}
	for _, a := range []string{"a", "b", "a"} {
		if err := etcdauth.EnrollAgent(ctx, root, a); err != nil {
			t.Fatalf("enroll %s: %v", a, err)
		}
	}
	// An older release granted every agent all node statuses and
	// replicas: a member that starts narrows the grants again.
	for _, p := range []string{api.NodeStatusPrefix(), api.ReplicasPrefix(), api.Prefix + "replicas/"} {
		if _, err := root.RoleGrantPermission(ctx, etcdauth.AgentRole("a"), p, clientv3.GetPrefixRangeEnd(p), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
			t.Fatal(err)
		}
	}
	if err := etcdauth.Enable(ctx, root, "cp1"); err != nil {
		t.Fatalf("Enable with authorization on: %v", err)
	}
	for k, v := range map[string]string{
		api.AssignKey("a", "p", "n1"): "a's", api.AssignKey("b", "p", "n2"): "b's",
		api.SecretKey("p", "n2"): "secret", api.ImageKey("p", "img"): "image", api.AgentKey("b"): "b",
		api.NodeStatusKey("p", "n2", "b"): "b's status", api.ReplicaKey("p", "img", "b"): "b's replica",
	} {
		if _, err := root.Put(ctx, k, v); err != nil {
			t.Fatalf("root writes %s: %v", k, err)
		}
	}

	a := client(issue(pki.Identity{Name: "a", Role: pki.RoleAgent}))
	stranger := client(issue(pki.Identity{Name: "c", Role: pki.RoleAgent})) // not enrolled
	get := func(c *clientv3.Client, prefix string) error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := c.Get(cctx, prefix, clientv3.WithPrefix())
		return err
	}
	put := func(c *clientv3.Client, key string) error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := c.Put(cctx, key, "x")
		return err
	}
	for _, tc := range []struct {
		name   string
		op     func() error
		denied bool
	}{
		{"agent a reads its assignments", func() error { return get(a, api.AssignPrefix("a")) }, false},
		{"agent a reads the images", func() error { return get(a, api.ImagesPrefix("")) }, false},
		{"agent a writes its registration", func() error { return put(a, api.AgentKey("a")) }, false},
		{"agent a writes the status of its node", func() error { return put(a, api.NodeStatusKey("p", "n1", "a")) }, false},
		{"agent a reports its replica", func() error { return put(a, api.ReplicaKey("p", "img", "a")) }, false},
		{"agent a reads every replica", func() error { return get(a, api.ReplicasPrefix()) }, false},
		{"agent a writes the status of b's node", func() error { return put(a, api.NodeStatusKey("p", "n2", "b")) }, true},
		{"agent a writes b's replica", func() error { return put(a, api.ReplicaKey("p", "img", "b")) }, true},
		{"agent a reads b's node statuses", func() error { return get(a, api.AgentNodeStatusPrefix("b")) }, true},
		{"agent a reads b's assignments", func() error { return get(a, api.AssignPrefix("b")) }, true},
		{"agent a reads every assignment", func() error { return get(a, api.AssignPrefix("")) }, true},
		{"agent a reads the CHAP secrets", func() error { return get(a, api.SecretsPrefix("")) }, true},
		{"agent a writes b's registration", func() error { return put(a, api.AgentKey("b")) }, true},
		{"agent a writes an assignment", func() error { return put(a, api.AssignKey("a", "p", "n9")) }, true},
		{"agent a writes an image", func() error { return put(a, api.ImageKey("p", "img")) }, true},
		{"an agent not enrolled reads images", func() error { return get(stranger, api.ImagesPrefix("")) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			switch {
			case !tc.denied && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.denied && err == nil:
				t.Fatal("allowed")
			case tc.denied && !errors.Is(err, rpctypes.ErrPermissionDenied) && !strings.Contains(err.Error(), "user name not found"):
				t.Fatalf("refused with %v, want etcd's permission denied", err)
			}
			if err != nil {
				t.Logf("etcd says: %v", err)
			}
		})
	}
	// Nothing the refused calls tried was written.
	resp, err := root.Get(ctx, api.AgentKey("b"))
	if err != nil || string(resp.Kvs[0].Value) != "b" {
		t.Fatalf("b's registration: %v %v", resp, err)
	}
	if resp, err := root.Get(ctx, api.AssignKey("a", "p", "n9")); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("a refused assignment was written: %v %v", resp, err)
	}
	for k, want := range map[string]string{api.NodeStatusKey("p", "n2", "b"): "b's status", api.ReplicaKey("p", "img", "b"): "b's replica"} {
		if resp, err := root.Get(ctx, k); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
			t.Fatalf("%s after a's refused write: %v %v", k, resp, err)
		}
	}
}

// Members that start a cluster together each make every member's user
// before turning authorization on (the one that turns it on first must not
// lock the others out); a member added later gets its user from
// AddMember. Each member's certificate then reads and writes everything.
func TestMembersHaveTheirUsers(t *testing.T) {
	ctx := context.Background()
	tm := startTLSMember(t)
	if err := etcdauth.AddMember(ctx, tm.root, "cp9"); err != nil { // authorization off: nothing to do
		t.Fatal(err)
	}
	if err := etcdauth.Enable(ctx, tm.root, "cp1", "cp1", "cp2", "cp3"); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.AddMember(ctx, tm.root, "cp4"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		denied bool
	}{{"cp2", false}, {"cp3", false}, {"cp4", false}, {"cp9", true}} {
		c := tm.client(tm.issue(pki.Identity{Name: tc.name, Role: pki.RoleMember}))
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := c.Put(cctx, api.SecretKey("p", tc.name), "x")
		cancel()
		switch {
		case !tc.denied && err != nil:
			t.Errorf("member %s cannot write: %v", tc.name, err)
		case tc.denied && err == nil:
			t.Errorf("member %s, never added, writes", tc.name)
		}
	}
	// Again, with authorization on and the users there: idempotent.
	if err := etcdauth.Enable(ctx, tm.root, "cp1", "cp2", "cp3"); err != nil {
		t.Fatal(err)
	}
	if err := etcdauth.AddMember(ctx, tm.root, "cp4"); err != nil {
		t.Fatal(err)
	}
}

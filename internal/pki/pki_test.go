package pki_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/internal/pki"
)

func TestIssueAndIdentity(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.Init(dir, "test CA", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Init(dir, "again", 0, now); err == nil {
		t.Fatal("a second init over an existing CA succeeded")
	}
	if ca, err = pki.Load(dir); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		id      pki.Identity
		wantErr string
	}{
		{"member", pki.Identity{Name: "cp1", Role: pki.RoleMember}, ""},
		{"agent", pki.Identity{Name: "s1", Role: pki.RoleAgent}, ""},
		{"user", pki.Identity{Name: "alice", Role: pki.RoleUser, Projects: []string{"lab", "prod"}}, ""},
		{"admin", pki.Identity{Name: "root", Role: pki.RoleAdmin}, ""},
		{"user without project", pki.Identity{Name: "bob", Role: pki.RoleUser}, "at least one --project"},
		{"agent with project", pki.Identity{Name: "s2", Role: pki.RoleAgent, Projects: []string{"lab"}}, "belongs to no project"},
		{"bad name", pki.Identity{Name: "Bad_Name", Role: pki.RoleAgent}, "agent name"},
		{"bad project", pki.Identity{Name: "carol", Role: pki.RoleUser, Projects: []string{"a/b"}}, "project"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := filepath.Join(dir, tc.name)
			c, err := ca.Issue(pki.Request{Identity: tc.id}, base+".crt", base+".key", now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				if _, err := os.Stat(base + ".key"); err == nil {
					t.Fatal("a key was written for a refused request")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(base + ".key")
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
			}
			read, err := pki.ReadCert(base + ".crt")
			if err != nil {
				t.Fatal(err)
			}
			got, err := pki.IdentityOf(read)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got.Projects)
			if got.Name != tc.id.Name || got.Role != tc.id.Role || !slices.Equal(got.Projects, tc.id.Projects) {
				t.Fatalf("identity %v, want %v", got, tc.id)
			}
			if _, err := read.Verify(verifyOpts(ca)); err != nil {
				t.Fatalf("does not verify against the CA: %v", err)
			}
			if tc.id.Role == pki.RoleMember && !slices.Contains(c.DNSNames, "localhost") {
				t.Fatalf("member SANs %v lack localhost", c.DNSNames)
			}
			if _, err := ca.Issue(pki.Request{Identity: tc.id}, base+".crt", base+".key", now); err == nil {
				t.Fatal("issuing over existing files succeeded")
			}
			desc := pki.Describe(read, now)
			if !strings.Contains(desc, "Role:       "+string(tc.id.Role)) || strings.Contains(desc, "PRIVATE") {
				t.Fatalf("describe:\n%s", desc)
			}
		})
	}
}

func verifyOpts(ca *pki.CA) x509.VerifyOptions {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return x509.VerifyOptions{Roots: p, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}

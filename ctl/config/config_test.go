package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/ctl/client"
	"github.com/sanboot/sanboot/internal/pki"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte("endpoints: [10.0.0.1:7443, \"[::1]:7443\"]\nproject: from-file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	for _, tc := range []struct {
		name string
		in   Input
		env  map[string]string
		want Settings
	}{
		{"defaults", Input{}, map[string]string{"HOME": home},
			Settings{Endpoints: []string{client.DefaultEndpoint}, EndpointsFrom: "default", Project: DefaultProject, ProjectFrom: "default",
				ConfigFile: filepath.Join(home, ".config", "sanboot", "config.yaml")}},
		{"no HOME", Input{}, nil,
			Settings{Endpoints: []string{client.DefaultEndpoint}, EndpointsFrom: "default", Project: DefaultProject, ProjectFrom: "default"}},
		{"file", Input{ConfigPath: file}, nil,
			Settings{Endpoints: []string{"10.0.0.1:7443", "[::1]:7443"}, EndpointsFrom: file, Project: "from-file", ProjectFrom: file, ConfigFile: file, ConfigFound: true}},
		{"env over file", Input{ConfigPath: file}, map[string]string{EnvEndpoints: " 10.0.0.9:1 , 10.0.0.8:2,", EnvProject: "from-env"},
			Settings{Endpoints: []string{"10.0.0.9:1", "10.0.0.8:2"}, EndpointsFrom: EnvEndpoints, Project: "from-env", ProjectFrom: EnvProject, ConfigFile: file, ConfigFound: true}},
		{"flags over env", Input{ConfigPath: file, Endpoints: "h:3", Project: "from-flag"}, map[string]string{EnvEndpoints: "10.0.0.9:1", EnvProject: "from-env"},
			Settings{Endpoints: []string{"h:3"}, EndpointsFrom: "--endpoints", Project: "from-flag", ProjectFrom: "--project", ConfigFile: file, ConfigFound: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Getenv = func(k string) string { return tc.env[k] }
			got, err := Resolve(in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseEndpoints(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"a:1", []string{"a:1"}, ""},
		{"a:1,b:2", []string{"a:1", "b:2"}, ""},
		{"[::1]:7443", []string{"[::1]:7443"}, ""},
		{"a", nil, "not host:port"},
		{":7443", nil, "not host:port"},
		{"a:0", nil, "no valid port"},
		{"a:http", nil, "no valid port"},
		{",", nil, "names no endpoint"},
	} {
		got, err := ParseEndpoints(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseEndpoints(%q) error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseEndpoints(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestLoadErrorsNameFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("project: a\n\nendpoints: [h:1]\nendpoint: [h:2]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, found, err := Load(path)
	want := path + `:4: unknown field "endpoint"`
	if !found || err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load: found=%v err=%v, want prefix %q", found, err, want)
	}
	_, found, err = Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if found || err != nil {
		t.Errorf("missing file: found=%v err=%v, want neither", found, err)
	}
}

// TLS files come from the flags (all three), else the config file, whose
// relative paths are relative to the file; half a configuration is refused.
func TestResolveTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(filepath.Join(dir, "pki"), "test CA", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue(pki.Request{Identity: pki.Identity{Name: "alice", Role: pki.RoleUser, Projects: []string{"lab"}}},
		filepath.Join(dir, "pki", "alice.crt"), filepath.Join(dir, "pki", "alice.key"), time.Now()); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte("cert: pki/alice.crt\nkey: pki/alice.key\ncacert: pki/ca.crt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := Resolve(Input{ConfigPath: file})
	if err != nil {
		t.Fatal(err)
	}
	if st.TLS.CertFile != filepath.Join(dir, "pki", "alice.crt") || st.TLS.TrustedCAFile != filepath.Join(dir, "pki", "ca.crt") || st.TLSFrom != file {
		t.Fatalf("TLS from the file: %+v from %s", st.TLS, st.TLSFrom)
	}
	if st.Project != "lab" || st.ProjectFrom != st.TLS.CertFile {
		t.Fatalf("project %q from %q, want lab from the certificate of its one project", st.Project, st.ProjectFrom)
	}
	flags := tlsconfig.Files{CertFile: st.TLS.CertFile, KeyFile: st.TLS.KeyFile, TrustedCAFile: st.TLS.TrustedCAFile}
	if st, err = Resolve(Input{ConfigPath: file, TLS: flags}); err != nil || st.TLSFrom != "--cert" {
		t.Fatalf("flags over the file: %v, from %q", err, st.TLSFrom)
	}
	if _, err := Resolve(Input{TLS: tlsconfig.Files{CertFile: flags.CertFile}}); err == nil || !strings.Contains(err.Error(), "--key is missing") {
		t.Fatalf("--cert alone: %v", err)
	}
	half := filepath.Join(dir, "half.yaml")
	if err := os.WriteFile(half, []byte("cert: pki/alice.crt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Resolve(Input{ConfigPath: half}); err == nil || !strings.Contains(err.Error(), "key is missing") || !strings.Contains(err.Error(), half) {
		t.Fatalf("cert: alone in the file: %v", err)
	}
}

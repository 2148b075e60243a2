package member

import (
	"flag"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/internal/pki"
)

func TestFlagsAndDefaults(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// want checks the completed config; wantErr is a part of the error.
		want    func(Config) string
		wantErr string
	}{
		{name: "defaults", want: func(c Config) string {
			switch {
			case c.Name != "default" || c.DataDir != "./sanboot-data" || c.Cluster.State != "new":
				return "name, data dir or state"
			case urlStrings(c.Client.ListenURLs)[0] != "http://127.0.0.1:2379" || urlStrings(c.Client.AdvertiseURLs)[0] != "http://127.0.0.1:2379":
				return "client URLs"
			case urlStrings(c.Peer.ListenURLs)[0] != "http://127.0.0.1:2380" || urlStrings(c.Peer.AdvertiseURLs)[0] != "http://127.0.0.1:2380":
				return "peer URLs"
			case c.Cluster.Initial != "default=http://127.0.0.1:2380":
				return "initial cluster"
			case c.Storage != StorageConfig{AutoCompactionMode: "periodic", AutoCompactionRetention: "5m", SnapshotCount: 10000, SnapshotCatchUpEntries: 1000}:
				return "storage settings"
			case c.Raft != RaftConfig{HeartbeatInterval: 100, ElectionTimeout: 1000}:
				return "raft timings (etcd's defaults)"
			}
			return ""
		}},
		{name: "storage settings", args: []string{"--auto-compaction-mode", "revision", "--auto-compaction-retention", "20000", "--snapshot-count", "2000",
			"--snapshot-catchup-entries", "300"},
			want: func(c Config) string {
				if c.Storage != (StorageConfig{AutoCompactionMode: "revision", AutoCompactionRetention: "20000", SnapshotCount: 2000, SnapshotCatchUpEntries: 300}) {
					return "storage settings"
				}
				return ""
			}},
		{name: "compaction off", args: []string{"--auto-compaction-retention", "0"}, want: func(c Config) string {
			if c.Storage.AutoCompactionRetention != "0" {
				return "retention"
			}
			return ""
		}},
		{name: "hours", args: []string{"--auto-compaction-retention", "1"}, want: func(c Config) string {
			if c.Storage.AutoCompactionRetention != "1" {
				return "retention"
			}
			return ""
		}},
		{name: "bad retention", args: []string{"--auto-compaction-retention", "soon"}, wantErr: "give a duration such as 5m"},
		{name: "bad revisions", args: []string{"--auto-compaction-mode", "revision", "--auto-compaction-retention", "5m"}, wantErr: "number of revisions"},
		{name: "bad mode", args: []string{"--auto-compaction-mode", "daily"}, wantErr: `use "periodic" or "revision"`},
		{name: "raft timings", args: []string{"--heartbeat-interval", "50", "--election-timeout", "500"}, want: func(c Config) string {
			if c.Raft != (RaftConfig{HeartbeatInterval: 50, ElectionTimeout: 500}) || c.Raft.ElectionTimeoutDuration().String() != "500ms" {
				return "raft timings"
			}
			return ""
		}},
		{name: "election under 5 heartbeats", args: []string{"--heartbeat-interval", "300"}, wantErr: "less than 5 times --heartbeat-interval"},
		{name: "election past etcd's limit", args: []string{"--election-timeout", "60000"}, wantErr: "etcd's limit of 50000"},
		{name: "no heartbeat", args: []string{"--heartbeat-interval", "0"}, wantErr: "must be positive"},
		{name: "etcd vocabulary", args: []string{"--name", "cp1", "--data-dir", "/d",
			"--listen-client-urls", "http://127.0.0.1:3379,http://[::1]:3379", "--advertise-client-urls", "http://localhost:3379",
			"--listen-peer-urls", "http://127.0.0.1:3380", "--initial-advertise-peer-urls", "http://localhost:3380",
			"--initial-cluster", "cp1=http://localhost:3380,cp2=http://localhost:4380", "--initial-cluster-state", "existing"},
			want: func(c Config) string {
				switch {
				case c.Name != "cp1" || c.DataDir != "/d" || c.Cluster.State != "existing":
					return "name, data dir or state"
				case len(c.Client.ListenURLs) != 2 || urlStrings(c.Client.AdvertiseURLs)[0] != "http://localhost:3379":
					return "client URLs"
				case urlStrings(c.Peer.AdvertiseURLs)[0] != "http://localhost:3380":
					return "peer URLs"
				case c.Cluster.Initial != "cp1=http://localhost:3380,cp2=http://localhost:4380":
					return "initial cluster"
				}
				return ""
			}},
		{name: "initial cluster follows name and peer URL", args: []string{"--name", "x", "--listen-peer-urls", "http://127.0.0.1:9"},
			want: func(c Config) string {
				if c.Cluster.Initial != "x=http://127.0.0.1:9" {
					return "initial cluster " + c.Cluster.Initial
				}
				return ""
			}},
		{name: "all interfaces", args: []string{"--listen-client-urls", "http://0.0.0.0:2379"}, wantErr: "loopback only"},
		{name: "no host", args: []string{"--listen-peer-urls", "http://:2380"}, wantErr: "loopback only"},
		{name: "network address", args: []string{"--listen-client-urls", "http://127.0.0.1:2379,http://192.168.1.5:2379"}, wantErr: "192.168.1.5:2379"},
		{name: "hostname", args: []string{"--listen-client-urls", "http://example.com:2379"}, wantErr: "loopback only"},
		{name: "https", args: []string{"--listen-client-urls", "https://127.0.0.1:2379"}, wantErr: "https needs --cert-file"},
		{name: "bad state", args: []string{"--initial-cluster-state", "old"}, wantErr: `use "new" or "existing"`},
		{name: "empty name", args: []string{"--name", ""}, wantErr: "--name is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			c.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			got, err := c.complete()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if bad := tt.want(got); bad != "" {
				t.Fatalf("wrong %s in %+v", bad, got)
			}
		})
	}
}

func TestBadURLFlag(t *testing.T) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	c.AddFlags(fs)
	if err := fs.Parse([]string{"--listen-client-urls", "127.0.0.1:2379"}); err == nil || !strings.Contains(err.Error(), "is not a URL") {
		t.Fatalf("error = %v", err)
	}
}

func TestRequireLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:7443": true, "[::1]:7443": true, "localhost:7443": true, "127.0.0.2:1": true,
		"0.0.0.0:7443": false, ":7443": false, "[::]:7443": false, "10.0.0.1:7443": false, "7443": false,
	} {
		if err := RequireLoopback("--api-listen", addr); (err == nil) != ok {
			t.Errorf("RequireLoopback(%q) = %v", addr, err)
		}
	}
}

// With TLS files a member may listen beyond loopback over https; half a
// configuration, or TLS without client certificates, is refused.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.Init(dir, "test CA", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	crt, key := filepath.Join(dir, "m.crt"), filepath.Join(dir, "m.key")
	if _, err := ca.Issue(pki.Request{Identity: pki.Identity{Name: "cp1", Role: pki.RoleMember}}, crt, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	cafile := filepath.Join(dir, pki.CACertFile)
	client := []string{"--cert-file", crt, "--key-file", key, "--trusted-ca-file", cafile}
	peer := []string{"--peer-cert-file", crt, "--peer-key-file", key, "--peer-trusted-ca-file", cafile}
	for _, tt := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"https beyond loopback", append(append([]string{"--listen-client-urls", "https://0.0.0.0:2379", "--listen-peer-urls", "https://10.0.0.1:2380"}, client...), peer...), ""},
		{"client TLS only, plaintext peers on loopback", append([]string{"--listen-client-urls", "https://10.0.0.1:2379"}, client...), ""},
		{"plaintext beyond loopback beside TLS", append([]string{"--listen-client-urls", "https://10.0.0.1:2379,http://10.0.0.1:2381"}, client...), "without TLS"},
		{"peer https without peer TLS", append([]string{"--listen-peer-urls", "https://10.0.0.1:2380"}, client...), "https needs --peer-cert-file"},
		{"half the files", []string{"--cert-file", crt, "--listen-client-urls", "https://10.0.0.1:2379"}, "--key-file is missing"},
		{"key of another certificate", []string{"--cert-file", crt, "--key-file", filepath.Join(dir, pki.CAKeyFile), "--trusted-ca-file", cafile}, "--cert-file"},
		{"no client certificates", append([]string{"--client-cert-auth=false"}, client...), "--client-cert-auth=false with TLS"},
		{"no peer certificates", append([]string{"--peer-client-cert-auth=false"}, peer...), "--peer-client-cert-auth=false with TLS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			c.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			_, err := c.complete()
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestClusterNames(t *testing.T) {
	for _, tc := range []struct {
		initial string
		want    []string
	}{
		{"", nil},
		{"cp1=https://10.0.0.1:2380", []string{"cp1"}},
		{"cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380, cp3=https://10.0.0.3:2380", []string{"cp1", "cp2", "cp3"}},
		{"cp1=https://10.0.0.1:2380,cp1=https://10.0.1.1:2380,cp2=https://10.0.0.2:2380", []string{"cp1", "cp2"}}, // two peer URLs of cp1
	} {
		got := ClusterConfig{Initial: tc.initial}.Names()
		if !slices.Equal(got, tc.want) {
			t.Errorf("Names of %q = %q, want %q", tc.initial, got, tc.want)
		}
	}
}

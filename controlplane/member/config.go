package member

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sanboot/sanboot/internal/tlsconfig"
)

// Config is what a member needs, split by concern like etcd's embed.Config.
// Flag names are etcd's own.
type Config struct {
	// Name identifies the member in the cluster (--name).
	Name string
	// DataDir holds the member's WAL and snapshots (--data-dir). Starting
	// again on the same directory keeps all state; the cluster flags are
	// then ignored.
	DataDir string
	Client  ClientConfig
	Peer    PeerConfig
	Cluster ClusterConfig
	Storage StorageConfig
	Raft    RaftConfig
	// ReadyTimeout bounds the wait for the member to join its cluster and
	// serve clients (default 60s).
	ReadyTimeout time.Duration
	// Log receives etcd's warnings and errors (default slog.Default()).
	Log *slog.Logger
}

// ClientConfig is where clients (the API server, agents) reach the member.
type ClientConfig struct {
	// ListenURLs: --listen-client-urls.
	ListenURLs []url.URL
	// AdvertiseURLs are told to clients: --advertise-client-urls
	// (default: ListenURLs).
	AdvertiseURLs []url.URL
	// TLS: --cert-file, --key-file, --trusted-ca-file. The same files
	// serve the API (--api-listen) and are the member's client
	// certificate towards its own etcd.
	TLS tlsconfig.Files
	// ClientCertAuth: --client-cert-auth (sanboot's default is true:
	// with TLS, every client presents a certificate of the CA).
	ClientCertAuth bool
}

// PeerConfig is where the other members reach this one.
type PeerConfig struct {
	// ListenURLs: --listen-peer-urls.
	ListenURLs []url.URL
	// AdvertiseURLs are told to peers: --initial-advertise-peer-urls
	// (default: ListenURLs).
	AdvertiseURLs []url.URL
	// TLS: --peer-cert-file, --peer-key-file, --peer-trusted-ca-file.
	TLS tlsconfig.Files
	// ClientCertAuth: --peer-client-cert-auth (default true).
	ClientCertAuth bool
}

// ClusterConfig is how the first start of a member finds its cluster.
type ClusterConfig struct {
	// Initial is name=peerURL,... of every member: --initial-cluster
	// (default: Name=the first advertised peer URL, a cluster of one).
	Initial string
	// State is "new" for a member of a new cluster, "existing" for one
	// added to a running cluster (etcdctl member add first):
	// --initial-cluster-state.
	State string
}

// StorageConfig bounds what the member keeps, on disk and in memory.
type StorageConfig struct {
	// AutoCompactionMode is "periodic" or "revision"
	// (--auto-compaction-mode); AutoCompactionRetention is a duration for
	// periodic, a number of revisions for revision; "0" keeps all history
	// (--auto-compaction-retention). sanboot's default is periodic, 5m:
	// every 5 minutes etcd drops the history older than 5 minutes (what
	// Kubernetes' API server asks of its etcd). Without compaction every
	// revision of every key stays, in the database and in etcd's in-memory
	// index. A watch that falls further behind lists again.
	AutoCompactionMode, AutoCompactionRetention string
	// SnapshotCount is how many committed transactions trigger a snapshot
	// on disk (--snapshot-count, default 10,000: etcd's). It does not bound
	// the raft log in memory: etcd 3.6 cuts that every 100 entries, down to
	// SnapshotCatchUpEntries.
	SnapshotCount uint64
	// SnapshotCatchUpEntries is how many of the latest raft entries the
	// member keeps in memory for a follower that lags behind
	// (--snapshot-catchup-entries; etcd's default is 5,000, sanboot's
	// 1,000). A follower further behind than that gets a snapshot (the
	// whole database) instead of the entries it missed. sanboot writes up
	// to 100 records per entry (16 KB on average while 10,000 nodes are
	// created), so 5,000 entries can hold ~100 MB; 1,000 bound it to
	// ~20 MB, and a follower then needs a snapshot only when it is more
	// than a few seconds of such a burst behind (docs/operations.md).
	SnapshotCatchUpEntries uint64
}

// RaftConfig is how quickly members notice a dead or cut-off leader.
type RaftConfig struct {
	// HeartbeatInterval is how often the raft leader tells followers it
	// lives, in milliseconds (--heartbeat-interval, default 100: etcd's).
	HeartbeatInterval uint
	// ElectionTimeout is how long a follower hears nothing from the leader
	// before it calls an election, in milliseconds (--election-timeout,
	// default 1000: etcd's); at least 5 heartbeats. A member cut off from
	// its peers has no leader after about this long, and its API refuses
	// calls after three of them (apiserver.Config.LeaderWait). etcd's
	// tuning guide: about the round-trip time between members for the
	// heartbeat, ten times that for the election timeout; every member of
	// a cluster should use the same values.
	ElectionTimeout uint
}

// check validates the raft timings as etcd will.
func (r RaftConfig) check() error {
	switch {
	case r.HeartbeatInterval == 0 || r.ElectionTimeout == 0:
		return errors.New("--heartbeat-interval and --election-timeout must be positive (milliseconds)")
	case r.ElectionTimeout < 5*r.HeartbeatInterval:
		return fmt.Errorf("--election-timeout %d ms is less than 5 times --heartbeat-interval %d ms: raise it", r.ElectionTimeout, r.HeartbeatInterval)
	case r.ElectionTimeout > 50000:
		return fmt.Errorf("--election-timeout %d ms is more than etcd's limit of 50000 ms", r.ElectionTimeout)
	}
	return nil
}

// ElectionTimeoutDuration is ElectionTimeout as a duration.
func (r RaftConfig) ElectionTimeoutDuration() time.Duration {
	return time.Duration(r.ElectionTimeout) * time.Millisecond
}

// Names are the members' names in Initial, each once, in order.
func (c ClusterConfig) Names() []string {
	var names []string
	for _, m := range strings.Split(c.Initial, ",") {
		name, _, ok := strings.Cut(strings.TrimSpace(m), "=")
		if ok && name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

// Defaults of the flags.
const (
	DefaultCompactionMode      = "periodic"
	DefaultCompactionRetention = "5m"
	DefaultSnapshotCount       = 10000
	DefaultSnapshotCatchUp     = 1000
	DefaultHeartbeatInterval   = 100  // ms, etcd's
	DefaultElectionTimeout     = 1000 // ms, etcd's

	DefaultName       = "default"
	DefaultDataDir    = "./sanboot-data"
	DefaultClientURL  = "http://127.0.0.1:2379"
	DefaultPeerURL    = "http://127.0.0.1:2380"
	DefaultReadyAfter = 60 * time.Second
)

// DefaultConfig is a single member on loopback, as the flags default.
func DefaultConfig() Config {
	c := Config{Name: DefaultName, DataDir: DefaultDataDir, Cluster: ClusterConfig{State: "new"}, ReadyTimeout: DefaultReadyAfter,
		Storage: StorageConfig{AutoCompactionMode: DefaultCompactionMode, AutoCompactionRetention: DefaultCompactionRetention, SnapshotCount: DefaultSnapshotCount,
			SnapshotCatchUpEntries: DefaultSnapshotCatchUp},
		Raft: RaftConfig{HeartbeatInterval: DefaultHeartbeatInterval, ElectionTimeout: DefaultElectionTimeout}}
	c.Client.ClientCertAuth, c.Peer.ClientCertAuth = true, true
	c.Client.ListenURLs = mustURLs(DefaultClientURL)
	c.Peer.ListenURLs = mustURLs(DefaultPeerURL)
	return c
}

// AddFlags defines etcd's flags on fs, writing into c (whose current values
// are the defaults).
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Name, "name", c.Name, "human-readable name of this member")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the member's data (WAL, snapshots); a restart on it keeps all state")
	fs.Var((*urlsFlag)(&c.Client.ListenURLs), "listen-client-urls", "comma-separated URLs to listen on for etcd clients: https:// with --cert-file, else http:// on loopback only")
	fs.Var((*urlsFlag)(&c.Client.AdvertiseURLs), "advertise-client-urls", "comma-separated client URLs to advertise (default: --listen-client-urls)")
	fs.Var((*urlsFlag)(&c.Peer.ListenURLs), "listen-peer-urls", "comma-separated URLs to listen on for peers: https:// with --peer-cert-file, else http:// on loopback only")
	fs.Var((*urlsFlag)(&c.Peer.AdvertiseURLs), "initial-advertise-peer-urls", "comma-separated peer URLs to advertise (default: --listen-peer-urls)")
	fs.StringVar(&c.Cluster.Initial, "initial-cluster", c.Cluster.Initial, "initial cluster configuration, name=peerURL,... (default: --name=first advertised peer URL)")
	fs.StringVar(&c.Cluster.State, "initial-cluster-state", c.Cluster.State, `"new" to start a new cluster, "existing" to join a running one`)
	fs.StringVar(&c.Client.TLS.CertFile, "cert-file", "", "certificate of the etcd client listeners and the API (sanbootctl pki issue member); with it they may listen beyond loopback")
	fs.StringVar(&c.Client.TLS.KeyFile, "key-file", "", "private key of --cert-file")
	fs.StringVar(&c.Client.TLS.TrustedCAFile, "trusted-ca-file", "", "CA that etcd and API clients' certificates must be signed by")
	fs.BoolVar(&c.Client.ClientCertAuth, "client-cert-auth", c.Client.ClientCertAuth, "require client certificates (sanboot refuses TLS without them)")
	fs.StringVar(&c.Peer.TLS.CertFile, "peer-cert-file", "", "certificate of the peer listeners and of this member towards its peers")
	fs.StringVar(&c.Peer.TLS.KeyFile, "peer-key-file", "", "private key of --peer-cert-file")
	fs.StringVar(&c.Peer.TLS.TrustedCAFile, "peer-trusted-ca-file", "", "CA that peers' certificates must be signed by")
	fs.BoolVar(&c.Peer.ClientCertAuth, "peer-client-cert-auth", c.Peer.ClientCertAuth, "require peers' certificates (sanboot refuses peer TLS without them)")
	fs.StringVar(&c.Storage.AutoCompactionMode, "auto-compaction-mode", c.Storage.AutoCompactionMode, `"periodic" (--auto-compaction-retention is a duration) or "revision" (a number of revisions)`)
	fs.StringVar(&c.Storage.AutoCompactionRetention, "auto-compaction-retention", c.Storage.AutoCompactionRetention, `how much of etcd's history to keep ("0": all, never compact)`)
	fs.Uint64Var(&c.Storage.SnapshotCount, "snapshot-count", c.Storage.SnapshotCount, "committed transactions between two etcd snapshots on disk")
	fs.Uint64Var(&c.Storage.SnapshotCatchUpEntries, "snapshot-catchup-entries", c.Storage.SnapshotCatchUpEntries, "raft entries kept in memory for a follower that lags behind (bounds the raft log's memory; a follower further behind gets a snapshot)")
	fs.UintVar(&c.Raft.HeartbeatInterval, "heartbeat-interval", c.Raft.HeartbeatInterval, "milliseconds between the raft leader's heartbeats (etcd's; about the round-trip time between members; the same on every member)")
	fs.UintVar(&c.Raft.ElectionTimeout, "election-timeout", c.Raft.ElectionTimeout, "milliseconds without a heartbeat before a follower calls an election (etcd's; at least 5 heartbeats; a member cut off this long has no leader, and its API refuses calls after three times this)")
}

// Secure says whether clients reach the member (etcd and the API) over
// mutual TLS.
func (c Config) Secure() bool { return c.Client.TLS.Enabled() }

// complete fills the defaults that depend on other fields and checks c.
func (c Config) complete() (Config, error) {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyAfter
	}
	if c.Raft == (RaftConfig{}) {
		c.Raft = RaftConfig{HeartbeatInterval: DefaultHeartbeatInterval, ElectionTimeout: DefaultElectionTimeout}
	}
	if len(c.Client.AdvertiseURLs) == 0 {
		c.Client.AdvertiseURLs = c.Client.ListenURLs
	}
	if len(c.Peer.AdvertiseURLs) == 0 {
		c.Peer.AdvertiseURLs = c.Peer.ListenURLs
	}
	if c.Cluster.Initial == "" && len(c.Peer.AdvertiseURLs) > 0 {
		c.Cluster.Initial = c.Name + "=" + c.Peer.AdvertiseURLs[0].String()
	}
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("--name is empty: give the member a name"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is empty: give a directory for the member's data"))
	}
	errs = append(errs, c.Storage.check(), c.Raft.check())
	if c.Cluster.State != "new" && c.Cluster.State != "existing" {
		errs = append(errs, fmt.Errorf("--initial-cluster-state is %q: use \"new\" or \"existing\"", c.Cluster.State))
	}
	errs = append(errs, c.Client.TLS.Check(tlsconfig.MemberClientNames), c.Peer.TLS.Check(tlsconfig.MemberPeerNames))
	if c.Client.TLS.Enabled() && !c.Client.ClientCertAuth {
		errs = append(errs, errors.New("--client-cert-auth=false with TLS: sanboot requires client certificates; drop the flag"))
	}
	if c.Peer.TLS.Enabled() && !c.Peer.ClientCertAuth {
		errs = append(errs, errors.New("--peer-client-cert-auth=false with TLS: sanboot requires peer certificates; drop the flag"))
	}
	for _, f := range []struct {
		flag, tlsFlag string
		urls          []url.URL
		tls           bool
	}{
		{"--listen-client-urls", "--cert-file", c.Client.ListenURLs, c.Client.TLS.Enabled()},
		{"--listen-peer-urls", "--peer-cert-file", c.Peer.ListenURLs, c.Peer.TLS.Enabled()},
	} {
		if len(f.urls) == 0 {
			errs = append(errs, fmt.Errorf("%s is empty: give at least one URL", f.flag))
		}
		for _, u := range f.urls {
			switch {
			case u.Scheme == "https" && !f.tls:
				errs = append(errs, fmt.Errorf("%s: %s: https needs %s (sanbootctl pki issue member)", f.flag, u.String(), f.tlsFlag))
			case u.Scheme == "https":
			case u.Scheme == "http":
				errs = append(errs, RequireLoopback(f.flag, u.Host))
			default:
				errs = append(errs, fmt.Errorf("%s: %s: use http:// (loopback) or https://", f.flag, u.String()))
			}
		}
	}
	return c, errors.Join(errs...)
}

// check validates the compaction settings as etcd will read them.
func (s StorageConfig) check() error {
	switch s.AutoCompactionMode {
	case "periodic":
		if _, err := strconv.Atoi(s.AutoCompactionRetention); err == nil {
			return nil // hours, etcd's older form
		}
		if d, err := time.ParseDuration(s.AutoCompactionRetention); err != nil || d < 0 {
			return fmt.Errorf("--auto-compaction-retention %q: with periodic compaction give a duration such as 5m or 1h (0: never compact)", s.AutoCompactionRetention)
		}
	case "revision":
		if n, err := strconv.ParseInt(s.AutoCompactionRetention, 10, 64); err != nil || n < 0 {
			return fmt.Errorf("--auto-compaction-retention %q: with revision compaction give a number of revisions such as 10000 (0: never compact)", s.AutoCompactionRetention)
		}
	default:
		return fmt.Errorf("--auto-compaction-mode %q: use \"periodic\" or \"revision\"", s.AutoCompactionMode)
	}
	return nil
}

// RequireLoopback refuses a listen address (host:port) that is not on the
// loopback interface: the insecure mode (no TLS, no authentication) must
// not be reachable from the network.
func RequireLoopback(flagName, hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port: %w", flagName, hostport, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s: refusing to listen on %s without TLS: plaintext listens on loopback only; use 127.0.0.1, [::1] or localhost, or configure TLS (--cert-file, --key-file, --trusted-ca-file; see sanbootctl pki)", flagName, hostport)
}

// urlsFlag is a comma-separated list of URLs.
type urlsFlag []url.URL

func (f *urlsFlag) String() string {
	if f == nil {
		return ""
	}
	s := make([]string, len(*f))
	for i, u := range *f {
		s[i] = u.String()
	}
	return strings.Join(s, ",")
}

func (f *urlsFlag) Set(v string) error {
	urls, err := parseURLs(v)
	if err != nil {
		return err
	}
	*f = urls
	return nil
}

func parseURLs(v string) ([]url.URL, error) {
	var out []url.URL
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || u.Scheme == "" {
			return nil, fmt.Errorf("%q is not a URL such as http://127.0.0.1:2379", s)
		}
		out = append(out, *u)
	}
	return out, nil
}

func mustURLs(v string) []url.URL {
	u, err := parseURLs(v)
	if err != nil {
		panic(err)
	}
	return u
}

func urlStrings(urls []url.URL) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = u.String()
	}
	return out
}

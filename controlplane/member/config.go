package member

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"
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
}

// PeerConfig is where the other members reach this one.
type PeerConfig struct {
	// ListenURLs: --listen-peer-urls.
	ListenURLs []url.URL
	// AdvertiseURLs are told to peers: --initial-advertise-peer-urls
	// (default: ListenURLs).
	AdvertiseURLs []url.URL
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

// Defaults of the flags.
const (
	DefaultName       = "default"
	DefaultDataDir    = "./sanboot-data"
	DefaultClientURL  = "http://127.0.0.1:2379"
	DefaultPeerURL    = "http://127.0.0.1:2380"
	DefaultReadyAfter = 60 * time.Second
)

// DefaultConfig is a single member on loopback, as the flags default.
func DefaultConfig() Config {
	c := Config{Name: DefaultName, DataDir: DefaultDataDir, Cluster: ClusterConfig{State: "new"}, ReadyTimeout: DefaultReadyAfter}
	c.Client.ListenURLs = mustURLs(DefaultClientURL)
	c.Peer.ListenURLs = mustURLs(DefaultPeerURL)
	return c
}

// AddFlags defines etcd's flags on fs, writing into c (whose current values
// are the defaults).
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Name, "name", c.Name, "human-readable name of this member")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the member's data (WAL, snapshots); a restart on it keeps all state")
	fs.Var((*urlsFlag)(&c.Client.ListenURLs), "listen-client-urls", "comma-separated URLs to listen on for etcd clients (loopback only in insecure mode)")
	fs.Var((*urlsFlag)(&c.Client.AdvertiseURLs), "advertise-client-urls", "comma-separated client URLs to advertise (default: --listen-client-urls)")
	fs.Var((*urlsFlag)(&c.Peer.ListenURLs), "listen-peer-urls", "comma-separated URLs to listen on for peers (loopback only in insecure mode)")
	fs.Var((*urlsFlag)(&c.Peer.AdvertiseURLs), "initial-advertise-peer-urls", "comma-separated peer URLs to advertise (default: --listen-peer-urls)")
	fs.StringVar(&c.Cluster.Initial, "initial-cluster", c.Cluster.Initial, "initial cluster configuration, name=peerURL,... (default: --name=first advertised peer URL)")
	fs.StringVar(&c.Cluster.State, "initial-cluster-state", c.Cluster.State, `"new" to start a new cluster, "existing" to join a running one`)
}

// complete fills the defaults that depend on other fields and checks c.
func (c Config) complete() (Config, error) {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyAfter
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
	if c.Cluster.State != "new" && c.Cluster.State != "existing" {
		errs = append(errs, fmt.Errorf("--initial-cluster-state is %q: use \"new\" or \"existing\"", c.Cluster.State))
	}
	for _, f := range []struct {
		flag string
		urls []url.URL
	}{{"--listen-client-urls", c.Client.ListenURLs}, {"--listen-peer-urls", c.Peer.ListenURLs}} {
		if len(f.urls) == 0 {
			errs = append(errs, fmt.Errorf("%s is empty: give at least one URL", f.flag))
		}
		for _, u := range f.urls {
			if u.Scheme != "http" {
				errs = append(errs, fmt.Errorf("%s: %s: only http:// is supported until TLS is configured", f.flag, u.String()))
				continue
			}
			errs = append(errs, RequireLoopback(f.flag, u.Host))
		}
	}
	return c, errors.Join(errs...)
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
	return fmt.Errorf("%s: refusing to listen on %s: insecure mode (no TLS yet) listens on loopback only; use 127.0.0.1, [::1] or localhost", flagName, hostport)
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

// Package member runs the control plane's embedded etcd member
// (go.etcd.io/etcd/server/v3/embed): it turns a Config in etcd's vocabulary
// into an embed.Config (TLS through etcd's own TLSInfo, see package
// tlsconfig), refuses plaintext listeners beyond loopback, routes etcd's
// logs into slog at warn level, and waits until the member serves.
//
// A member on a data directory that already holds data starts from it: a
// restart keeps all state.
package member

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sanboot/sanboot/controlplane/internal/zapslog"
)

// Member is a running etcd member.
type Member struct {
	etcd  *embed.Etcd
	cfg   Config
	level zap.AtomicLevel // of etcd's logs
}

// Start starts the member and waits until it is ready to serve clients (or
// cfg.ReadyTimeout passes, or ctx ends).
func Start(ctx context.Context, cfg Config) (*Member, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, fmt.Errorf("etcd member configuration: %w", err)
	}
	log := cfg.Log
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls, ec.AdvertiseClientUrls = cfg.Client.ListenURLs, cfg.Client.AdvertiseURLs
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = cfg.Peer.ListenURLs, cfg.Peer.AdvertiseURLs
	ec.InitialCluster = cfg.Cluster.Initial
	ec.ClusterState = cfg.Cluster.State
	ec.InitialClusterToken = "sanboot"
	ec.AutoCompactionMode, ec.AutoCompactionRetention = cfg.Storage.AutoCompactionMode, cfg.Storage.AutoCompactionRetention
	ec.TickMs, ec.ElectionMs = cfg.Raft.HeartbeatInterval, cfg.Raft.ElectionTimeout
	if cfg.Storage.SnapshotCount > 0 {
		ec.SnapshotCount = cfg.Storage.SnapshotCount
	}
	if cfg.Storage.SnapshotCatchUpEntries > 0 {
		ec.SnapshotCatchUpEntries = cfg.Storage.SnapshotCatchUpEntries
	}
	// etcd 3.6 leaves this at 0 and then warns about every request.
	ec.WarningUnaryRequestDuration = 300 * time.Millisecond
	ec.Logger = "zap"
	level := zap.NewAtomicLevelAt(zapcore.WarnLevel)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapslog.New(log, level))

	if cfg.Client.TLS.Enabled() {
		ec.ClientTLSInfo = cfg.Client.TLS.Info(cfg.Client.ClientCertAuth)
		log.Info("etcd clients: mutual TLS", "cert-file", cfg.Client.TLS.CertFile, "trusted-ca-file", cfg.Client.TLS.TrustedCAFile)
	} else {
		log.Warn("etcd clients: insecure mode (no TLS): listening on loopback only")
	}
	if cfg.Peer.TLS.Enabled() {
		ec.PeerTLSInfo = cfg.Peer.TLS.Info(cfg.Peer.ClientCertAuth)
		log.Info("etcd peers: mutual TLS", "peer-cert-file", cfg.Peer.TLS.CertFile, "peer-trusted-ca-file", cfg.Peer.TLS.TrustedCAFile)
	} else {
		log.Warn("etcd peers: insecure mode (no TLS): listening on loopback only")
	}
	log.Info("starting etcd member", "name", cfg.Name, "data-dir", cfg.DataDir,
		"listen-client-urls", urlStrings(cfg.Client.ListenURLs), "advertise-client-urls", urlStrings(cfg.Client.AdvertiseURLs),
		"listen-peer-urls", urlStrings(cfg.Peer.ListenURLs), "initial-advertise-peer-urls", urlStrings(cfg.Peer.AdvertiseURLs),
		"initial-cluster", cfg.Cluster.Initial, "initial-cluster-state", cfg.Cluster.State)
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start etcd member %q in %s (is another instance using the directory or the ports?): %w", cfg.Name, cfg.DataDir, err)
	}
	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd member %q failed while starting: %w", cfg.Name, err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("etcd member %q not ready after %s: with several members, start a majority of them (see --initial-cluster %q)", cfg.Name, cfg.ReadyTimeout, cfg.Cluster.Initial)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("etcd member %q: gave up waiting for it to be ready: %w", cfg.Name, ctx.Err())
	}
	for _, u := range cfg.Client.ListenURLs {
		log.Info("etcd serving clients", "url", u.String())
	}
	for _, u := range cfg.Peer.ListenURLs {
		log.Info("etcd serving peers", "url", u.String())
	}
	return &Member{etcd: e, cfg: cfg, level: level}, nil
}

// ClientURLs are the URLs clients use to reach this member.
func (m *Member) ClientURLs() []string { return urlStrings(m.cfg.Client.AdvertiseURLs) }

// Name is the member's name.
func (m *Member) Name() string { return m.cfg.Name }

// Client returns a new client of this member; the caller closes it. With
// TLS it presents the member's certificate (--cert-file).
func (m *Member) Client() (*clientv3.Client, error) {
	cc := clientv3.Config{
		Endpoints:   m.localURLs(),
		DialTimeout: 5 * time.Second,
		Logger:      zapslog.New(m.cfg.Log, zapcore.WarnLevel),
	}
	if m.cfg.Client.TLS.Enabled() {
		t, err := m.ClientTLS()
		if err != nil {
			return nil, err
		}
		cc.TLS = t
	}
	c, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd client of member %q: %w", m.cfg.Name, err)
	}
	return c, nil
}

// ClientTLS is the member's client configuration (its certificate, the
// CA it trusts), nil without TLS: towards its own etcd and API.
func (m *Member) ClientTLS() (*tls.Config, error) {
	if !m.cfg.Client.TLS.Enabled() {
		return nil, nil
	}
	return m.cfg.Client.TLS.Client()
}

// localURLs are the client listen URLs as this host reaches them: an
// unspecified address (0.0.0.0, ::) becomes loopback, which a member's
// certificate always names.
func (m *Member) localURLs() []string {
	out := make([]string, len(m.cfg.Client.ListenURLs))
	for i, u := range m.cfg.Client.ListenURLs {
		u.Host = LocalAddr(u.Host)
		out[i] = u.String()
	}
	return out
}

// LocalAddr turns a listen address whose host is unspecified (0.0.0.0, ::
// or empty) into the loopback address of the same port.
func LocalAddr(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if ip != nil && ip.To4() == nil {
			return net.JoinHostPort("::1", port)
		}
		return net.JoinHostPort("127.0.0.1", port)
	}
	return hostport
}

// AwaitVoter returns once the member votes: at once for a member of a new
// cluster; for one added as a learner (sanbootctl member add) once it has
// been promoted (sanbootctl member promote). A learner serves no client
// requests, so nothing else of the control plane can start before.
func (m *Member) AwaitVoter(ctx context.Context) error {
	if !m.etcd.Server.IsLearner() {
		return nil
	}
	m.cfg.Log.Warn("this member is a learner: it receives the data and serves nothing until promoted; run sanbootctl member promote once member list shows it caught up", "name", m.cfg.Name)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for m.etcd.Server.IsLearner() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("member %q: stopped while waiting to be promoted: %w", m.cfg.Name, ctx.Err())
		case err := <-m.etcd.Err():
			return fmt.Errorf("etcd member %q: %w", m.cfg.Name, err)
		case <-t.C:
		}
	}
	m.cfg.Log.Info("promoted: this member votes now; starting the control plane", "name", m.cfg.Name)
	return nil
}

// HasLeader says whether the member's etcd knows a raft leader now. A
// member cut off from a quorum of its peers has none an election timeout
// after it last heard from the leader.
func (m *Member) HasLeader() bool { return m.etcd.Server.Leader() != 0 } // 0: raft.None

// Raft is the member's raft timing (heartbeat, election timeout).
func (m *Member) Raft() RaftConfig { return m.cfg.Raft }

// Err reports a fatal error of the running member.
func (m *Member) Err() <-chan error { return m.etcd.Err() }

// Stopped is closed when the etcd member has stopped, by Close or by
// itself: etcd stops a member that was removed from the cluster.
func (m *Member) Stopped() <-chan struct{} { return m.etcd.Server.StopNotify() }

// Close stops the member and waits until it has stopped.
func (m *Member) Close() {
	// etcd reports its closing listeners as errors; they are not.
	m.level.SetLevel(zapcore.FatalLevel)
	m.etcd.Close()
	<-m.etcd.Server.StopNotify()
	m.cfg.Log.Info("etcd member stopped", "name", m.cfg.Name)
}

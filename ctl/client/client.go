// Package client opens sanbootctl's connection to the sanboot API through
// package dial: one connection spanning every configured control-plane
// endpoint, mutual TLS when a certificate is configured.
package client

import (
	"crypto/tls"
	"errors"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/dial"
)

// DefaultEndpoint is where the control plane's API listens by default
// (sanboot-controlplane --api-listen).
const DefaultEndpoint = api.DefaultAPIAddress

// Options says how to reach the API.
type Options struct {
	// Endpoints are host:port addresses of API servers, tried in order.
	Endpoints []string
	// TLS secures the transport (package tlsconfig); nil means plaintext.
	TLS *tls.Config
	// CallTimeout bounds each unary call that has no earlier deadline;
	// 0 means no bound beyond the caller's context.
	CallTimeout time.Duration
	// Discover learns the other members' API addresses from their
	// registrations and fails over to them too (package dial).
	Discover bool
	// CacheDir, with Discover, keeps the learned addresses for the next
	// client of the same endpoints (members.go); empty: none kept.
	CacheDir string
	// OnFailover is called when the connection leaves an endpoint whose
	// member has no etcd leader, for another (dial.Options.OnFailover).
	// With Discover and CacheDir the next runs skip it as long
	// (dial.LeaveFor).
	OnFailover func(endpoint string, err error)
}

// Client is a connection to the sanboot API. It is safe for concurrent use.
// Its watches read its writes: each asks for a view at least as new as the
// last object the client wrote (see readYourWrites).
type Client struct {
	sanbootv1.SanbootClient
	conn      *grpc.ClientConn
	endpoints []string
	// discovered is closed once the first discovery of members ended.
	discovered chan struct{}
}

// New creates the connection. It does not wait for it: the first call
// connects, so New fails only on bad options.
func New(opts Options) (*Client, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("no API endpoint given: set --endpoints, SANBOOT_ENDPOINTS or endpoints: in the config file")
	}
	c := &Client{endpoints: append([]string(nil), opts.Endpoints...), discovered: make(chan struct{})}
	var cached []string
	var left map[string]time.Time
	var onDiscover func([]string, error)
	onFailover := func(endpoint string, _ time.Time, err error) {
		if opts.OnFailover != nil {
			opts.OnFailover(endpoint, err)
		}
	}
	if opts.Discover {
		configured := slices.Clone(opts.Endpoints)
		cached = learnedEndpoints(opts.CacheDir, configured)
		left = leftEndpoints(opts.CacheDir, configured, time.Now())
		var once sync.Once
		var mu sync.Mutex // one write of the cache at a time
		onDiscover = func(eps []string, err error) {
			if err == nil {
				mu.Lock()
				saveEndpoints(opts.CacheDir, configured, eps)
				mu.Unlock()
			}
			once.Do(func() { close(c.discovered) })
		}
		onFailover = func(endpoint string, until time.Time, err error) {
			mu.Lock()
			saveLeft(opts.CacheDir, configured, endpoint, until)
			mu.Unlock()
			if opts.OnFailover != nil {
				opts.OnFailover(endpoint, err)
			}
		}
	} else {
		close(c.discovered)
	}
	conn, err := dial.Dial(dial.Options{Endpoints: opts.Endpoints, TLS: opts.TLS, CallTimeout: opts.CallTimeout,
		Discover: opts.Discover, Learned: cached, Left: left, OnDiscover: onDiscover, OnFailover: onFailover})
	if err != nil {
		return nil, err
	}
	c.conn = conn
	c.SanbootClient = &readYourWrites{SanbootClient: sanbootv1.NewSanbootClient(conn)}
	return c, nil
}

// Endpoints returns the endpoints the client was created with.
func (c *Client) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// closeWait is how long Close waits for the first discovery of members
// to end (so that a short run still leaves them in the cache).
const closeWait = time.Second

// Close closes the connection.
func (c *Client) Close() error {
	select {
	case <-c.discovered:
	case <-time.After(closeWait):
	}
	return c.conn.Close()
}

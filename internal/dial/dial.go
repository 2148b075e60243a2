// Package dial opens every gRPC connection sanboot makes to its API:
// sanbootctl's, an agent's to the member that holds an upload or wants an
// export, a member's own readiness check.
//
// One connection spans every endpoint given: a static resolver hands gRPC
// all the addresses and the pick_first policy uses the first that answers,
// moving on to the next when it fails. A caller therefore talks to "the
// API", not to one member (several control-plane members are endpoints
// of one connection).
//
// A member's death or a leader election costs a caller at most a retried
// call, never an error: calls that end Unavailable (the member went away,
// or its etcd has no leader for a moment) are retried by gRPC with backoff
// (serviceConfig), on the next endpoint once the connection to the dead
// one has failed; keepalive pings notice a member cut off from the
// network, whose connection would otherwise hang. A member that still
// answers but whose etcd has no leader (cut off from its peers only) says
// so (NoLeader, noleader.go) and the connection leaves it for another
// endpoint (failover.go). Every write of the API
// is a compare-and-put or a put of the whole object, so a write retried
// after the first attempt was applied finds its own result (apply reports
// it unchanged).
//
// With Options.Discover, a connection given one member learns the others'
// API addresses from their registrations and fails over to them as well
// (discover.go).
//
// With a TLS configuration, each endpoint's certificate is verified
// against the endpoint's own host (its IP address or DNS name must be a
// SAN of the server's certificate); without one the connection is
// plaintext, which the servers accept only on loopback.
package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

// Options say how to reach the API.
type Options struct {
	// Endpoints are host:port addresses of API servers, tried in order.
	Endpoints []string
	// TLS secures the transport (package tlsconfig); nil means plaintext.
	TLS *tls.Config
	// CallTimeout bounds each unary call that has no earlier deadline;
	// 0 means no bound beyond the caller's context.
	CallTimeout time.Duration
	// Name is the connection's authority for logs (default "api").
	Name string
	// Discover makes the connection learn the other members' API
	// addresses from their registrations and fail over to them too (see
	// discover.go). For clients of the whole API (sanbootctl); not for a
	// connection meant for one member.
	Discover bool
	// Learned are addresses a previous discovery found (a cache): tried
	// after Endpoints until this connection's discovery replaces them.
	Learned []string
	// OnDiscover, if set, is called after each discovery with every
	// endpoint the connection uses now (the configured ones first), or
	// with the error that left them as they were.
	OnDiscover func(endpoints []string, err error)
	// OnFailover, if set, is called when the connection leaves an
	// endpoint whose member answered that its etcd has no leader (err),
	// until the time given, before the call is made again on another
	// (failover.go).
	OnFailover func(endpoint string, until time.Time, err error)
	// Left are endpoints an earlier connection left (a cache), and until
	// when: this one does not use them before then either, unless no
	// other endpoint is left.
	Left map[string]time.Time
}

// scheme names the static resolver of one connection.
const scheme = "sanboot-endpoints"

// serviceConfig: the first endpoint that answers, and retries of calls
// that end Unavailable (gRPC caps maxAttempts at 5; the backoff is
// randomized up to the current bound).
const serviceConfig = `{
  "loadBalancingConfig": [{"pick_first": {}}],
  "methodConfig": [{
    "name": [{"service": "sanboot.v1.Sanboot"}, {"service": "sanboot.v1.AgentData"}, {"service": "grpc.health.v1.Health"}],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.2s",
      "maxBackoff": "2s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Keepalive: a connection whose member stopped answering (cut off, its
// host gone) is declared dead after KeepaliveTime+KeepaliveTimeout and the
// next endpoint is tried. The API server permits pings this often
// (apiserver.ServerOptions).
const (
	KeepaliveTime    = 10 * time.Second
	KeepaliveTimeout = 5 * time.Second
)

// Dial creates the connection. It does not wait for it: the first call
// connects, so Dial fails only on bad options.
func Dial(opts Options) (*grpc.ClientConn, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("no API endpoint given")
	}
	for _, e := range opts.Endpoints {
		if _, _, err := net.SplitHostPort(e); err != nil {
			return nil, fmt.Errorf("endpoint %q is not host:port: %w", e, err)
		}
	}
	initial := opts.Endpoints
	var disc *discoverer
	r := manual.NewBuilderWithScheme(scheme)
	if opts.Discover {
		disc = newDiscoverer(r, opts)
		initial = disc.endpoints(nil, opts.Learned)
	}
	// Each endpoint's certificate is verified against its own host, not
	// against the connection's one authority.
	set := newEndpointSet(r, opts, initial)
	if disc != nil {
		disc.set = set
	}

	creds := insecure.NewCredentials()
	if opts.TLS != nil {
		creds = credentials.NewTLS(opts.TLS)
	}
	dialOpts := []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithContextDialer(set.dial),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout, PermitWithoutStream: true}),
	}
	// Each attempt on another endpoint (set.unary) has its own CallTimeout.
	interceptors := []grpc.UnaryClientInterceptor{retryReads([]time.Duration{200 * time.Millisecond, 500 * time.Millisecond, time.Second}), set.unary}
	if opts.CallTimeout > 0 {
		interceptors = append(interceptors, callTimeout(opts.CallTimeout))
	}
	dialOpts = append(dialOpts, grpc.WithChainUnaryInterceptor(interceptors...), grpc.WithChainStreamInterceptor(set.stream))
	name := opts.Name
	if name == "" {
		name = "api"
	}
	conn, err := grpc.NewClient(scheme+":///"+name, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("set up connection to %v: %w", opts.Endpoints, err)
	}
	if disc != nil {
		go disc.run(conn)
	}
	return conn, nil
}

// retryReads makes a read (a unary Get or List call) that ended
// Unavailable again, once after each pause of backoff. gRPC's own retries
// (serviceConfig) stop at a call the server had begun to answer: a member
// killed in the middle of its answer ("connection reset by peer") would
// otherwise be an error printed to the user. A read is safe to repeat; by
// then pick_first has moved to the next endpoint. Writes are not repeated
// here: the API's answer to a repeated compare-and-put is the caller's to
// read.
func retryReads(backoff []time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if !isRead(method) {
			return err
		}
		for _, pause := range backoff {
			if status.Code(err) != codes.Unavailable {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(pause):
			}
			err = invoker(ctx, method, req, reply, cc, opts...)
		}
		return err
	}
}

// isRead says whether method ("/sanboot.v1.Sanboot/ListNodes") only reads.
func isRead(method string) bool {
	name := method[strings.LastIndex(method, "/")+1:]
	return strings.HasPrefix(name, "Get") || strings.HasPrefix(name, "List") || name == "Check"
}

// callTimeout bounds every unary call by d (streams are bounded by their
// caller's context only: a watch may rightly last long).
func callTimeout(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

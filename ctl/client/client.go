// Package client opens sanbootctl's connection to the sanboot API.
//
// One gRPC client connection spans every configured control-plane endpoint:
// a static resolver hands gRPC all the addresses and the pick_first policy
// uses the first one that answers, moving on to the next when it fails. A
// caller therefore talks to "the API", not to one member.
//
// The connection is plaintext today. Transport security plugs in through
// Options.Credentials (nil means insecure); nothing else changes when TLS
// arrives.
package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// DefaultEndpoint is where the control plane's API listens by default
// (sanboot-controlplane --api-listen).
const DefaultEndpoint = api.DefaultAPIAddress

// scheme names the static resolver of one connection.
const scheme = "sanboot-endpoints"

// Options says how to reach the API.
type Options struct {
	// Endpoints are host:port addresses of API servers, tried in order.
	Endpoints []string
	// Credentials secure the transport; nil means insecure (plaintext).
	Credentials credentials.TransportCredentials
	// CallTimeout bounds each unary call that has no earlier deadline;
	// 0 means no bound beyond the caller's context.
	CallTimeout time.Duration
}

// Client is a connection to the sanboot API. It is safe for concurrent use.
// Its watches read its writes: each asks for a view at least as new as the
// last object the client wrote (see readYourWrites).
type Client struct {
	sanbootv1.SanbootClient
	conn      *grpc.ClientConn
	endpoints []string
}

// New creates the connection. It does not wait for it: the first call
// connects, so New fails only on bad options.
func New(opts Options) (*Client, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("no API endpoint given: set --endpoints, SANBOOT_ENDPOINTS or endpoints: in the config file")
	}
	addrs := make([]resolver.Address, len(opts.Endpoints))
	for i, e := range opts.Endpoints {
		addrs[i] = resolver.Address{Addr: e}
	}
	r := manual.NewBuilderWithScheme(scheme)
	r.InitialState(resolver.State{Addresses: addrs})

	creds := opts.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	dialOpts := []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"pick_first": {}}]}`),
	}
	if opts.CallTimeout > 0 {
		dialOpts = append(dialOpts, grpc.WithChainUnaryInterceptor(callTimeout(opts.CallTimeout)))
	}
	conn, err := grpc.NewClient(scheme+":///api", dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("set up connection to %v: %w", opts.Endpoints, err)
	}
	return &Client{
		SanbootClient: &readYourWrites{SanbootClient: sanbootv1.NewSanbootClient(conn)},
		conn:          conn,
		endpoints:     append([]string(nil), opts.Endpoints...),
	}, nil
}

// Endpoints returns the endpoints the client was created with.
func (c *Client) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// callTimeout bounds every unary call by d (streams are bounded by their
// caller's context only: a watch may rightly last long).
func callTimeout(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

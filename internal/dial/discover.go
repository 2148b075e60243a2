package dial

import (
	"context"
	"net"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// Discovery: a connection given one reachable member learns the others.
// Every control-plane member registers the addresses its API is reached at
// (apiserver.RegisterMember, under a lease); ListMembers returns them. A
// connection with Options.Discover asks for them once it is created, again
// every DiscoverEvery and whenever gRPC asks its resolver to resolve again
// (a connection failed), and adds every address it learns after the
// configured ones: pick_first then moves on to a live member when the one
// it used dies, as if every member had been configured.
const (
	DiscoverEvery   = 30 * time.Second
	discoverTimeout = 5 * time.Second
)

// discoverer keeps one connection's addresses: the configured ones first,
// then the learned ones.
type discoverer struct {
	set        *endpointSet
	configured []string
	tls        bool
	onDiscover func([]string, error)
	now        chan struct{} // resolve again soon
}

func newDiscoverer(r *manual.Resolver, opts Options) *discoverer {
	d := &discoverer{configured: opts.Endpoints, tls: opts.TLS != nil, onDiscover: opts.OnDiscover, now: make(chan struct{}, 1)}
	r.ResolveNowCallback = func(resolver.ResolveNowOptions) {
		select {
		case d.now <- struct{}{}:
		default:
		}
	}
	return d
}

// run asks for the members until conn shuts down.
func (d *discoverer) run(conn *grpc.ClientConn) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // conn.Close ends discovery
		for s := conn.GetState(); s != connectivity.Shutdown; s = conn.GetState() {
			conn.WaitForStateChange(ctx, s)
		}
		cancel()
	}()
	api := sanbootv1.NewSanbootClient(conn)
	var known []string
	for {
		cctx, ccancel := context.WithTimeout(ctx, discoverTimeout)
		resp, err := api.ListMembers(cctx, &sanbootv1.ListMembersRequest{})
		ccancel()
		// On an error (an older server, a caller not allowed, no member
		// reachable) the addresses stay; the next round tries again.
		if err == nil {
			if eps := d.endpoints(resp.GetMembers(), nil); !slices.Equal(eps, known) {
				known = eps
				d.set.set(eps)
			}
		}
		if d.onDiscover != nil {
			d.onDiscover(slices.Clone(known), err)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.now:
		case <-time.After(DiscoverEvery):
		}
	}
}

// endpoints are the configured endpoints, then the members' API addresses
// and the extra ones that are not among them, in order. Without TLS only
// loopback addresses are learned: plaintext never leaves the host.
func (d *discoverer) endpoints(members []*sanbootv1.Member, extra []string) []string {
	out := slices.Clone(d.configured)
	add := func(e string) {
		host, _, err := net.SplitHostPort(e)
		if err == nil && !slices.Contains(out, e) && (d.tls || loopback(host)) {
			out = append(out, e)
		}
	}
	for _, m := range members {
		for _, e := range m.GetApiEndpoints() {
			add(e)
		}
	}
	for _, e := range extra {
		add(e)
	}
	return out
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// addresses are the resolver's addresses of endpoints (validated
// host:port); with TLS each is verified against its own host.
func addresses(endpoints []string, tls bool) []resolver.Address {
	addrs := make([]resolver.Address, len(endpoints))
	for i, e := range endpoints {
		addrs[i] = resolver.Address{Addr: e}
		if tls {
			host, _, _ := net.SplitHostPort(e)
			addrs[i].ServerName = host
		}
	}
	return addrs
}

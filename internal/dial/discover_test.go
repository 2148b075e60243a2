package dial_test

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/dial"
)

// fakeMember is a FAKE API server: ListMembers returns what every member
// registered, ListAgents says which member answered.
type fakeMember struct {
	sanbootv1.UnimplementedSanbootServer
	name    string
	members *[]*sanbootv1.Member
}

func (f *fakeMember) ListMembers(context.Context, *sanbootv1.ListMembersRequest) (*sanbootv1.ListMembersResponse, error) {
	return &sanbootv1.ListMembersResponse{Members: *f.members}, nil
}

func (f *fakeMember) ListAgents(context.Context, *sanbootv1.ListAgentsRequest) (*sanbootv1.ListAgentsResponse, error) {
	return &sanbootv1.ListAgentsResponse{Agents: []*sanbootv1.Agent{{State: "answered-by-" + f.name}}}, nil
}

// A client configured with one member learns the others from the
// registrations (only loopback ones without TLS), and when that member
// dies its next call is answered by another, without an error.
func TestDiscoverFailsOverToLearnedMembers(t *testing.T) {
	var members []*sanbootv1.Member
	servers := map[string]*grpc.Server{}
	var addrs []string
	for _, name := range []string{"m1", "m2", "m3"} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer()
		sanbootv1.RegisterSanbootServer(gs, &fakeMember{name: name, members: &members})
		go gs.Serve(lis)
		t.Cleanup(gs.Stop)
		servers[name] = gs
		addrs = append(addrs, lis.Addr().String())
		// Each member also advertises an address off the host, which a
		// plaintext client must not learn.
		members = append(members, &sanbootv1.Member{Name: name, ApiEndpoints: []string{lis.Addr().String(), "10.99.0.1:7443"}})
	}

	found := make(chan []string, 10)
	conn, err := dial.Dial(dial.Options{Endpoints: addrs[:1], Discover: true, OnDiscover: func(eps []string, err error) {
		if err == nil {
			found <- eps
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case eps := <-found:
		if !slices.Equal(eps, addrs) {
			t.Fatalf("learned %v, want %v (the configured one first, no address off the host)", eps, addrs)
		}
	case <-time.After(time.Minute):
		t.Fatal("nothing learned")
	}
	api := sanbootv1.NewSanbootClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
	if err != nil || resp.Agents[0].State != "answered-by-m1" {
		t.Fatalf("first call: %v, %v; want m1's answer", resp, err)
	}
	servers["m1"].Stop()
	resp, err = api.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
	if err != nil {
		t.Fatalf("the call after the configured member died: %v", err)
	}
	if got := resp.Agents[0].State; got != "answered-by-m2" && got != "answered-by-m3" {
		t.Fatalf("answered by %q", got)
	}
}

// Learned addresses from an earlier run are tried after the configured
// ones before this connection has learned anything: with the configured
// member dead from the start, the first call reaches a learned one.
func TestDiscoverUsesLearnedAddresses(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	members := []*sanbootv1.Member{{Name: "m2", ApiEndpoints: []string{lis.Addr().String()}}}
	gs := grpc.NewServer()
	sanbootv1.RegisterSanbootServer(gs, &fakeMember{name: "m2", members: &members})
	go gs.Serve(lis)
	defer gs.Stop()

	conn, err := dial.Dial(dial.Options{Endpoints: []string{deadAddr}, Discover: true, Learned: []string{lis.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := sanbootv1.NewSanbootClient(conn).ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
	if err != nil || resp.Agents[0].State != "answered-by-m2" {
		t.Fatalf("first call with the configured member dead: %v, %v; want m2's answer", resp, err)
	}
}

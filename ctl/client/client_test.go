package client

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// blockingSanboot is a FAKE API whose ListAgents answers only when the
// caller gives up, to test the per-call timeout.
type blockingSanboot struct {
	sanbootv1.UnimplementedSanbootServer
}

func (blockingSanboot) ListAgents(ctx context.Context, _ *sanbootv1.ListAgentsRequest) (*sanbootv1.ListAgentsResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func serve(t *testing.T, s sanbootv1.SanbootServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	sanbootv1.RegisterSanbootServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestNewNeedsEndpoints(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without endpoints succeeded")
	}
}

func TestCallTimeoutBoundsUnaryCalls(t *testing.T) {
	c, err := New(Options{Endpoints: []string{serve(t, blockingSanboot{})}, CallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = c.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("ListAgents: %v, want DeadlineExceeded from the call timeout", err)
	}
}

// TestFailsOverToTheNextEndpoint: the first endpoint refuses connections,
// the second answers.
func TestFailsOverToTheNextEndpoint(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	c, err := New(Options{Endpoints: []string{closed, serve(t, sanbootv1.UnimplementedSanbootServer{})}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The server answers Unimplemented: proof that the call reached it.
	_, err = c.ListMembers(ctx, &sanbootv1.ListMembersRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("ListMembers: %v, want Unimplemented from the second endpoint", err)
	}
}

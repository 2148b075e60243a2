package apiserver_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/dial"
)

// A member whose etcd has no leader (HasLeader is a FAKE switch here; the
// member asks its embedded etcd) answers reads and writes NoLeader, naming
// itself, with the trailer that stops gRPC's retries there; its open
// watches end so too. With a leader again it serves.
func TestNoLeaderRefusesCalls(t *testing.T) {
	var leader atomic.Bool
	leader.Store(true)
	a := cptest.StartAPI(t, cptest.Options{Config: apiserver.Config{Member: "cp-cut", HasLeader: leader.Load, LeaderWait: 200 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(a.Ctx, time.Minute)
	defer cancel()
	if _, err := a.API.ListNodes(ctx, &sanbootv1.ListRequest{}); err != nil {
		t.Fatalf("with a leader: %v", err)
	}
	watch, err := a.API.WatchNodes(ctx, &sanbootv1.WatchNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	events := recvAll(t, watch)
	events.until("SYNCED", func(ev *sanbootv1.NodeEvent) bool { return ev.Type == sanbootv1.NodeEvent_TYPE_SYNCED })

	leader.Store(false)
	for name, call := range map[string]func(...grpc.CallOption) error{
		"read": func(o ...grpc.CallOption) error {
			_, err := a.API.ListNodes(ctx, &sanbootv1.ListRequest{}, o...)
			return err
		},
		"write": func(o ...grpc.CallOption) error {
			_, err := a.API.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: newNode("n1", "img")}, o...)
			return err
		},
	} {
		var trailer metadata.MD
		err := call(grpc.Trailer(&trailer))
		if !dial.IsNoLeader(err) || !strings.Contains(err.Error(), "cp-cut has no etcd leader") {
			t.Errorf("%s without a leader: %v; want NoLeader naming cp-cut", name, err)
		}
		if got := trailer.Get("grpc-retry-pushback-ms"); len(got) != 1 || got[0] != "-1" {
			t.Errorf("%s: trailer %v, want grpc-retry-pushback-ms -1", name, trailer)
		}
	}
	select {
	case err := <-events.errc:
		if !dial.IsNoLeader(err) {
			t.Errorf("the open watch ended %v, want NoLeader", err)
		}
	case <-ctx.Done():
		t.Fatal("the open watch did not end without a leader")
	}
	leader.Store(true)
	if _, err := a.API.ListNodes(ctx, &sanbootv1.ListRequest{}); err != nil {
		t.Fatalf("with a leader again: %v", err)
	}
	// The refused write was not applied.
	if _, err := a.API.GetNode(ctx, &sanbootv1.GetRequest{Name: "n1"}); err == nil {
		t.Error("n1, refused without a leader, exists")
	}
}

package apiserver_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
)

func withMACs(n *sanbootv1.Node, project string, macs ...string) *sanbootv1.Node {
	n.Metadata.Project = project
	n.Spec.Macs = macs
	return n
}

// A MAC boots one node: a second node (in any project) that lists it is
// refused with the name of the node that has it; the first keeps it
// through updates, and deleting it frees the MAC.
func TestDuplicateMACIsRefused(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	e.image("other", "img")
	const mac = "52:54:00:12:34:56"
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("n001", "img"), "default", mac)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ project, mac string }{
		{"default", mac},
		{"other", mac},                   // across projects
		{"default", "52-54-00-12-34-56"}, // another spelling
	} {
		_, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("dupmac", "img"), tc.project, tc.mac)})
		wantCode(t, err, codes.FailedPrecondition, "spec.macs[0]", mac, "node default/n001")
	}
	// An existing node cannot take it either.
	e.node("n002", "img")
	_, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("n002", "img"), "default", "52:54:00:00:00:02", mac)})
	wantCode(t, err, codes.FailedPrecondition, "spec.macs[1]", "node default/n001")
	// The owner keeps it through an update that adds another MAC.
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("n001", "img"), "default", mac, "52:54:00:00:00:01")}); err != nil {
		t.Fatalf("the owner's update: %v", err)
	}
	// Dropping a MAC frees it.
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("n001", "img"), "default", mac)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("n002", "img"), "default", "52:54:00:00:00:01")}); err != nil {
		t.Fatalf("a MAC its owner dropped: %v", err)
	}
	// Deleting the owner frees its MAC at once.
	if _, err := e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: "n001"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("dupmac", "img"), "other", mac)}); err != nil {
		t.Fatalf("the MAC of a deleted node: %v", err)
	}
}

// Many concurrent creates of different nodes with one MAC: exactly one wins.
func TestConcurrentCreatesOneMACOneWins(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	const mac = "52:54:00:ab:cd:ef"
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode(fmt.Sprintf("n%d", i), "img"), "default", mac)})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Fatalf("n%d and n%d both got MAC %s", winner, i, mac)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("no create won: %v", errs)
	}
	for i, err := range errs {
		if i != winner {
			wantCode(t, err, codes.FailedPrecondition, fmt.Sprintf("node default/n%d", winner))
		}
	}
	resp, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{})
	if err != nil || len(resp.Nodes) != 1 {
		t.Fatalf("nodes after the race: %v, %v", resp.GetNodes(), err)
	}
}

// Nodes written before MACs were indexed may share one: the index is built
// on start, giving it to the oldest, and the other node's status says that
// the MAC cannot boot it.
func TestLegacyDuplicateMACsAreReported(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	const mac = "52:54:00:00:aa:01"
	now := time.Now()
	for i, name := range []string{"old", "young"} {
		n := withMACs(newNode(name, "img"), "default", mac)
		n.Metadata.Uid = name + "-uid"
		n.Metadata.Generation = 1
		n.Metadata.CreateTime = timestamppb.New(now.Add(time.Duration(i) * time.Hour))
		b, err := proto.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Put(e.ctx, api.NodeKey("default", name), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	// What a control plane does when it starts on such data.
	shared, err := apiserver.New(e.cli, apiserver.Config{Log: e.log}).IndexMACs(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(shared[mac]) != 2 {
		t.Fatalf("shared = %v, want %s in both nodes", shared, mac)
	}
	n := e.waitNode("young", func(n *sanbootv1.Node) bool {
		for _, c := range n.GetStatus().GetConditions() {
			if c.GetType() == api.ConditionMACsBoot && !c.GetStatus() && strings.Contains(c.GetMessage(), "default/old") {
				return true
			}
		}
		return false
	})
	if !strings.Contains(n.Status.Message, mac) {
		t.Errorf("status message %q does not name the MAC", n.Status.Message)
	}
	// A new node cannot take it either.
	_, err = e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("third", "img"), "default", mac)})
	wantCode(t, err, codes.FailedPrecondition, "node default/old")
}

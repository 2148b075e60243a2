package integration_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// A list far larger than gRPC's 4 MiB message limit: 1,500 nodes with 64
// long labels each (about 10 MB), read through the real API server by
// sanbootctl get, in a table and as JSON and YAML.
func TestListsLargerThanAMessage(t *testing.T) {
	s := start(t)
	const nodes = 1500
	var total int
	var ops []clientv3.Op
	flush := func() {
		if _, err := s.cli.Txn(s.ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := range nodes {
		n := &sanbootv1.Node{
			Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: fmt.Sprintf("n%04d", i), Generation: 1, Uid: fmt.Sprintf("uid-%d", i), Labels: map[string]string{}},
			Spec:     &sanbootv1.NodeSpec{Image: "golden"},
		}
		for l := range api.MaxLabels {
			n.Metadata.Labels[fmt.Sprintf("label-%02d-%s", l, strings.Repeat("k", 40))] = strings.Repeat("v", 63)
		}
		b, err := proto.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
		ops = append(ops, clientv3.OpPut(api.NodeKey("default", n.Metadata.Name), string(b)))
		if len(ops) == 100 {
			flush()
		}
	}
	if total < 2*4<<20 {
		t.Fatalf("the nodes take %d bytes: want well over 4 MiB", total)
	}

	// One response cannot hold them: asked for everything at once, the
	// server says to page, instead of failing with gRPC's limit.
	_, err := s.api.ListNodes(s.ctx, &sanbootv1.ListRequest{})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "page_size") {
		t.Fatalf("ListNodes without page_size: %v; want ResourceExhausted asking for pages", err)
	}

	out := s.ctl("get", "nodes", "-o", "json")
	var doc struct {
		Nodes []struct {
			Metadata struct{ Name string } `json:"metadata"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("get nodes -o json: %v (%d bytes)", err, len(out))
	}
	if len(doc.Nodes) != nodes {
		t.Fatalf("get nodes -o json: %d nodes, want %d", len(doc.Nodes), nodes)
	}
	for i, n := range doc.Nodes {
		if want := fmt.Sprintf("n%04d", i); n.Metadata.Name != want {
			t.Fatalf("node %d is %q, want %q: pages overlap or miss objects", i, n.Metadata.Name, want)
		}
	}
	if rows := strings.Count(s.ctl("get", "nodes"), "\n"); rows != nodes+1 {
		t.Errorf("get nodes: %d lines, want %d and a header", rows, nodes)
	}
	if n := strings.Count(s.ctl("get", "nodes", "-o", "yaml"), "\n    name: n"); n != nodes {
		t.Errorf("get nodes -o yaml: %d names, want %d", n, nodes)
	}
}

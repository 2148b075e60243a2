package cli

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/manifest"
)

func nodeObj(project, name, image string, labels map[string]string, rev int64) *manifest.Object {
	return &manifest.Object{Kind: "Node", Node: &sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: project, Name: name, Labels: labels, Revision: rev},
		Spec:     &sanbootv1.NodeSpec{Image: image},
	}}
}

// A node of a listed project is decided unchanged without the API only
// when the API would say so; the others are sent with the revision they
// were listed at.
func TestLiveNodesUnchanged(t *testing.T) {
	listed := func(name string, labels map[string]string, deleting bool) *sanbootv1.Node {
		n := nodeObj("p", name, "img", labels, 0).Node
		n.Metadata.Revision = 40
		if deleting {
			n.Metadata.DeleteTime = timestamppb.Now()
		}
		return n
	}
	live := liveNodes{"p": {rev: 50, nodes: map[string]*sanbootv1.Node{
		"same":     listed("same", map[string]string{"a": "1"}, false),
		"deleting": listed("deleting", nil, true),
	}}}
	rack := map[string]string{"a": "1"}
	for _, c := range []struct {
		what      string
		o         *manifest.Object
		unchanged bool
		sentRev   int64 // metadata.revision of the node sent
	}{
		{"same spec and labels", nodeObj("p", "same", "img", rack, 0), true, 0},
		{"same, at the listed revision", nodeObj("p", "same", "img", rack, 40), true, 0},
		{"same, at another revision (the API refuses it)", nodeObj("p", "same", "img", rack, 39), false, 39},
		{"other labels", nodeObj("p", "same", "img", nil, 0), false, 40},
		{"other spec", nodeObj("p", "same", "img2", rack, 0), false, 40},
		{"being deleted (the API says so)", nodeObj("p", "deleting", "img", nil, 0), false, 40},
		{"new", nodeObj("p", "new", "img", nil, 0), false, 0},
		{"project not listed", nodeObj("q", "same", "img", rack, 0), false, 0},
	} {
		if got := live.unchanged(c.o); got != c.unchanged {
			t.Errorf("%s: unchanged %v, want %v", c.what, got, c.unchanged)
		}
		if c.unchanged {
			continue
		}
		sent := live.toSend(c.o)
		if got := sent.GetMetadata().GetRevision(); got != c.sentRev {
			t.Errorf("%s: sent at revision %d, want %d", c.what, got, c.sentRev)
		}
		if c.o.Node.GetMetadata().GetRevision() != c.sentRev && sent == c.o.Node {
			t.Errorf("%s: the file's node was changed in place", c.what)
		}
	}
}

// Calls hold at most nodesPerCall nodes to send, any number of unchanged
// ones, and one listed project each (a call carries its list's revision).
func TestLiveNodesCalls(t *testing.T) {
	nodes := map[string]*sanbootv1.Node{}
	var objs []*manifest.Object
	for i := range 3 * nodesPerCall {
		name := fmt.Sprintf("n%03d", i)
		if i < 2*nodesPerCall { // listed as in the file: unchanged
			nodes[name] = nodeObj("p", name, "img", nil, 0).Node
		}
		objs = append(objs, nodeObj("p", name, "img", nil, 0))
	}
	objs = append(objs, nodeObj("q", "x", "img", nil, 0), nodeObj("p", "y", "img", nil, 0))
	live := liveNodes{"p": {rev: 7, nodes: nodes}}
	calls := live.calls(objs)
	var sizes []int
	var revs []int64
	for _, c := range calls {
		sizes, revs = append(sizes, len(c)), append(revs, live.readRevision(c))
	}
	// 200 unchanged and the first 100 to send, nodes of q apart, then y.
	if fmt.Sprint(sizes) != "[300 1 1]" || fmt.Sprint(revs) != "[7 0 7]" {
		t.Fatalf("calls of %v nodes at revisions %v, want [300 1 1] at [7 0 7]", sizes, revs)
	}
	if got := live.calls(objs[:2*nodesPerCall+nodesPerCall+1][2*nodesPerCall-1:]); len(got) != 2 || len(got[0]) != nodesPerCall+1 {
		t.Fatalf("1 unchanged and %d to send: calls of %d and %d nodes, want %d and 1", nodesPerCall+1, len(got[0]), len(got[len(got)-1]), nodesPerCall+1)
	}
}

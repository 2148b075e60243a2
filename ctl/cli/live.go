package cli

import (
	"context"
	"maps"

	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/manifest"
)

// listAtLeast is how many nodes of one project the files must name for
// apply and diff to read that project's nodes with one paged list (one
// revision) and decide unchanged nodes from it, sending only the others.
// Fewer are cheaper to ask the API about one by one than a list of a large
// project.
const listAtLeast = 2 * nodesPerCall

// liveNodes is what apply and diff read of the projects the files name
// many nodes of: each listed project's nodes, as one paged list read them.
type liveNodes map[string]*liveProject

// liveProject is one project's nodes by name, and the revision they were
// read at.
type liveProject struct {
	rev   int64
	nodes map[string]*sanbootv1.Node
}

// readLive lists the nodes of every project of which objs hold at least
// listAtLeast nodes.
func (s *session) readLive(ctx context.Context, c sanbootv1.SanbootClient, objs []*manifest.Object) (liveNodes, error) {
	count := map[string]int{}
	for _, o := range objs {
		if o.Node != nil {
			count[o.Meta().GetProject()]++
		}
	}
	live := liveNodes{}
	for p, n := range count {
		if n < listAtLeast {
			continue
		}
		resp, err := listNodes(ctx, c, &sanbootv1.ListRequest{Project: p, SpecOnly: true})
		if err != nil {
			return nil, s.rpcError(err)
		}
		lp := &liveProject{rev: resp.GetRevision(), nodes: make(map[string]*sanbootv1.Node, len(resp.GetNodes()))}
		for _, n := range resp.GetNodes() {
			lp.nodes[n.GetMetadata().GetName()] = n
		}
		live[p] = lp
	}
	return live, nil
}

// of returns the listed project of node o (nil when its project was not
// listed) and the node as listed (nil when it did not exist then).
func (l liveNodes) of(o *manifest.Object) (*liveProject, *sanbootv1.Node) {
	lp := l[o.Meta().GetProject()]
	if lp == nil {
		return nil, nil
	}
	return lp, lp.nodes[o.Meta().GetName()]
}

// unchanged says whether node o, of a listed project, is as listed: what
// the API's PutNode decides for an existing node it leaves unchanged (same
// spec and labels, not being deleted, at the revision o asks for if any).
// Anything else goes to the API, which writes it or says why not.
func (l liveNodes) unchanged(o *manifest.Object) bool {
	_, n := l.of(o)
	if n == nil {
		return false
	}
	m := n.GetMetadata()
	if m.GetDeleteTime() != nil {
		return false
	}
	if r := o.Node.GetMetadata().GetRevision(); r != 0 && r != m.GetRevision() {
		return false
	}
	return proto.Equal(n.GetSpec(), o.Node.GetSpec()) && maps.Equal(m.GetLabels(), o.Node.GetMetadata().GetLabels())
}

// toSend is node o as apply and diff send it: when its project was listed,
// with the revision it was listed at (unless o asks for its own), so that
// the API refuses it if it changed since, rather than write over the
// change.
func (l liveNodes) toSend(o *manifest.Object) *sanbootv1.Node {
	_, n := l.of(o)
	if n == nil || o.Node.GetMetadata().GetRevision() != 0 {
		return o.Node
	}
	out := proto.CloneOf(o.Node)
	out.Metadata.Revision = n.GetMetadata().GetRevision()
	return out
}

// calls cuts nodes (in file order) into runs that one PutNodes call each
// serves: at most nodesPerCall nodes to send (unchanged nodes of listed
// projects are decided without one), and never the nodes of a listed
// project with another's (a call carries the revision of its project's
// list).
func (l liveNodes) calls(nodes []*manifest.Object) [][]*manifest.Object {
	var out [][]*manifest.Object
	start, sends := 0, 0
	for k, o := range nodes {
		if k > start {
			p, q := nodes[start].Meta().GetProject(), o.Meta().GetProject()
			if sends == nodesPerCall || (p != q && (l[p] != nil || l[q] != nil)) {
				out = append(out, nodes[start:k])
				start, sends = k, 0
			}
		}
		if !l.unchanged(o) {
			sends++
		}
	}
	if start < len(nodes) {
		out = append(out, nodes[start:])
	}
	return out
}

// readRevision is the revision a call of nodes (one run of calls) carries:
// its project's list's, or 0 when it was not listed.
func (l liveNodes) readRevision(nodes []*manifest.Object) int64 {
	if len(nodes) == 0 {
		return 0
	}
	if lp := l[nodes[0].Meta().GetProject()]; lp != nil {
		return lp.rev
	}
	return 0
}

package apiserver

import (
	"context"
	"slices"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
)

// MaxPutNodes is how many nodes one PutNodes call may carry.
const MaxPutNodes = 256

// createsPerTxn is how many nodes one transaction creates: etcd takes at
// most 128 operations per transaction (--max-txn-ops).
const createsPerTxn = 100

// readsPerTxn is how many nodes one read-only transaction reads (five
// reads each, under etcd's 128 operations).
const readsPerTxn = 25

// putNodesAtOnce is how many of a PutNodes call's nodes that take
// PutNode's general path (they exist, or a revision was asked for) are
// worked on at once.
const putNodesAtOnce = 16

// PutNodes is PutNode of many nodes. The nodes the cache does not know
// are created in one etcd transaction: one nested transaction per node,
// each with its own comparisons (absent, image present), so that one
// raft proposal and one WAL fsync create them all. A node whose
// comparisons fail (it exists, and this member's cache had not seen it
// yet: rare) is read afterwards with the others, a few dozen per
// read-only transaction, and takes PutNode's general path; reads carried
// in every create, for the rare one that fails, made every create
// transaction larger. Every node has its own result.
func (s *Server) PutNodes(ctx context.Context, req *sanbootv1.PutNodesRequest) (*sanbootv1.PutNodesResponse, error) {
	if len(req.GetNodes()) > MaxPutNodes {
		return nil, status.Errorf(codes.InvalidArgument, "%d nodes in one PutNodes call: send at most %d per call", len(req.GetNodes()), MaxPutNodes)
	}
	out := make([]*sanbootv1.PutNodesResult, len(req.GetNodes()))
	nodes := make([]*sanbootv1.Node, len(out))
	pre := make([]*state.Store, len(out))
	var creates []*nodeCreate
	var at []int // creates[k] is nodes[at[k]]
	// A node named twice is created once (etcd refuses a transaction that
	// writes a key twice); its second entry takes the general path after.
	creating := map[state.Ref]bool{}
	// Likewise a MAC claimed twice: the second node takes the general path,
	// which refuses it naming the first.
	claimed := map[string]bool{}
	for i, n := range req.GetNodes() {
		n = proto.CloneOf(n)
		if err := api.ValidateNode(n); err != nil {
			out[i] = failed(invalid(err))
			continue
		}
		nodes[i] = n
	}
	known, forced := s.cache.newNodes(nodes)
	for i, n := range nodes {
		if n == nil {
			continue
		}
		ref := nodeRef(n)
		if req.GetDryRun() || n.Metadata.Revision != 0 || creating[ref] || known[i] ||
			slices.ContainsFunc(n.Spec.GetMacs(), func(m string) bool { return claimed[m] }) {
			continue
		}
		creating[ref] = true
		for _, m := range n.Spec.GetMacs() {
			claimed[m] = true
		}
		c, err := newNodeCreate(ref, n)
		if err != nil {
			out[i] = failed(err)
			continue
		}
		s.placeIn(c, forced[i])
		creates, at = append(creates, c), append(at, i)
	}
	for len(creates) > 0 {
		n := min(len(creates), createsPerTxn)
		chunk, idx := creates[:n], at[:n]
		if err := s.createNodes(ctx, chunk, func(k int, resp *sanbootv1.PutNodeResponse) {
			if resp != nil {
				out[idx[k]] = &sanbootv1.PutNodesResult{Node: resp.GetNode(), Result: resp.GetResult()}
			}
		}); err != nil {
			for _, i := range idx {
				out[i] = failed(err)
			}
		}
		creates, at = creates[n:], at[n:]
	}
	// The others (existing nodes, dry runs, failed creates) are read a few
	// dozen per read-only transaction, then decided one by one.
	var toRead []int
	for i, n := range nodes {
		if n != nil && out[i] == nil && pre[i] == nil {
			toRead = append(toRead, i)
		}
	}
	for len(toRead) > 0 {
		k := min(len(toRead), readsPerTxn)
		if err := s.readNodes(ctx, nodes, toRead[:k], pre); err != nil {
			for _, i := range toRead[:k] {
				out[i] = failed(err)
			}
		}
		toRead = toRead[k:]
	}
	// Their statuses, whose keys name the placed agents those reads told.
	if err := s.readStatuses(ctx, pre); err != nil {
		for i, st := range pre {
			if st != nil && out[i] == nil {
				out[i], pre[i] = failed(err), nil
			}
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, putNodesAtOnce)
	for i, n := range nodes {
		if n == nil || out[i] != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			resp, err := s.putNodeRetrying(ctx, nodeRef(n), n, req.GetMode(), req.GetDryRun(), req.GetReadRevision(), pre[i])
			if err != nil {
				out[i] = failed(err)
				return
			}
			out[i] = &sanbootv1.PutNodesResult{Node: resp.GetNode(), Result: resp.GetResult()}
		})
	}
	wg.Wait()
	// A node that etcd could not write or read for the moment (its leader
	// changed, this member is stopping or cut off) fails the call as a
	// whole, as Unavailable: the client's retry (internal/dial) makes it
	// again, on another member if this one goes, which a per-node error
	// inside a successful answer would never get. Nodes this attempt wrote
	// find themselves then (unchanged): a retry is safe.
	for _, r := range out {
		if codes.Code(r.GetCode()) == codes.Unavailable {
			return nil, status.Error(codes.Unavailable, r.GetMessage())
		}
	}
	return &sanbootv1.PutNodesResponse{Results: out}, nil
}

// createNodes commits creates in one transaction, a nested one per node,
// and calls done for each: with the answer when it was created, with nil
// when its comparisons failed.
func (s *Server) createNodes(ctx context.Context, creates []*nodeCreate, done func(k int, resp *sanbootv1.PutNodeResponse)) error {
	ops := make([]clientv3.Op, len(creates))
	for k, c := range creates {
		ops[k] = clientv3.OpTxn(c.cmps, c.ops, nil)
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return etcdError(ctx, "write", err)
	}
	rev := resp.Header.Revision
	answers := s.createdStore()
	for k, r := range resp.Responses {
		t := r.GetResponseTxn()
		if t.GetSucceeded() {
			done(k, s.created(answers, creates[k], rev, t.GetResponses()))
			continue
		}
		done(k, nil)
	}
	return nil
}

// readNodes reads, in one read-only transaction, what readNode reads for
// each of nodes[idx...], into pre.
func (s *Server) readNodes(ctx context.Context, nodes []*sanbootv1.Node, idx []int, pre []*state.Store) error {
	var ops []clientv3.Op
	for _, i := range idx {
		ops = append(ops, nodeReads(nodeRef(nodes[i]), nodes[i].GetSpec().GetImage())...)
	}
	resp, err := retryElection(ctx, s.cli.Txn(ctx).Then(ops...).Commit)
	if err != nil {
		return etcdError(ctx, "read", err)
	}
	at := 0
	for _, i := range idx {
		n := len(nodeReads(nodeRef(nodes[i]), nodes[i].GetSpec().GetImage()))
		pre[i] = s.readStore(resp.Header.Revision, resp.Responses[at:at+n])
		at += n
	}
	return nil
}

// readStatuses adds to each store of pre (one node's reads, readNodes)
// the status its node's placed agent reports, read at the
// store's revision: many nodes per read-only transaction, where
// readStatus reads one.
func (s *Server) readStatuses(ctx context.Context, pre []*state.Store) error {
	type read struct {
		st  *state.Store
		key string
	}
	var reads []read
	for _, st := range pre {
		if st == nil {
			continue
		}
		for ref, pl := range st.Placements { // the one node it was read for
			if agent := pl.Msg.GetAgent(); agent != "" {
				reads = append(reads, read{st, api.NodeStatusKey(ref.Project, ref.Name, agent)})
			}
		}
	}
	for chunk := range slices.Chunk(reads, statusRangesPerTxn) {
		ops := make([]clientv3.Op, len(chunk))
		for k, r := range chunk {
			ops[k] = get(r.key, clientv3.WithRev(r.st.Revision))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return etcdError(ctx, "read", err)
		}
		for k, r := range chunk {
			r.st.Apply(state.BatchFromKVs(r.st.Revision, resp.Responses[k].GetResponseRange().GetKvs()))
		}
	}
	return nil
}

// newNodes tells which of nodes (nil ones excepted) the cache knows and,
// for each of the others, the agent its placement at creation names
// (forcedOf), under one lock of the informer: taken twice per call, once
// for each, a call waited twice for the informer's updates (its write
// lock, held while the API's cache and the scheduler take them in).
func (c *cache) newNodes(nodes []*sanbootv1.Node) (known []bool, forced []forcedAgent) {
	known, forced = make([]bool, len(nodes)), make([]forcedAgent, len(nodes))
	c.lock()
	defer c.unlock()
	for i, n := range nodes {
		if n == nil {
			continue
		}
		if _, known[i] = c.views[nodeRef(n)]; !known[i] {
			forced[i] = forcedOf(c.store, n)
		}
	}
	return known, forced
}

func nodeRef(n *sanbootv1.Node) state.Ref {
	return state.Ref{Project: n.GetMetadata().GetProject(), Name: n.GetMetadata().GetName()}
}

// failed is the result of a node that err kept from being written.
func failed(err error) *sanbootv1.PutNodesResult {
	st := status.Convert(err)
	return &sanbootv1.PutNodesResult{Code: int32(st.Code()), Message: st.Message()}
}

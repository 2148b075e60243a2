package apiserver

import (
	"context"
	"errors"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
)

// statusRangesPerTxn is how many agents' status ranges one read-only
// transaction of listNodesPage reads (etcd takes at most 128 operations
// per transaction).
const statusRangesPerTxn = 100

// listNodesPage is ListNodes of one page of one project's nodes. It reads
// the node records from where the page starts, only as many as the page
// holds (more when a selector skips some), then what their views join:
// their placements, and each placed agent's statuses, as key ranges from
// the page's first name to its last; the agents; the MAC index when a node
// of the page names a MAC. Every read is at the revision of the first
// page. A page costs what it holds, not what the project holds: reading
// every node of the project for every page made a list of 10,000 nodes in
// pages of 500 read 200,000 records.
//
// With specOnly the nodes carry no status, and only their records are read.
func (s *Server) listNodesPage(ctx context.Context, f view.NodeFilter, p pager, specOnly bool) (*sanbootv1.ListNodesResponse, error) {
	prefix := api.NodesPrefix(f.Project)
	from := prefix
	if p.after != "" {
		project, name, _ := strings.Cut(p.after, "\x00")
		if project != f.Project {
			return nil, status.Errorf(codes.InvalidArgument, "page_token: it continues a list of project %q, not %q: pass the same project as for the first page", project, f.Project)
		}
		from = prefix + name + "\x00" // the first key after name
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	rev := p.rev
	var nodeKVs []*mvccpb.KeyValue
	var names []string // of the selected nodes, in key order
	anyMACs := false
	more := true
	for len(names) < p.size && more {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(p.size - len(names)))}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, listError(ctx, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		more = resp.More
		got := state.New(s.log, state.Nodes)
		got.Apply(state.BatchFromKVs(rev, resp.Kvs))
		for _, kv := range resp.Kvs {
			from = string(kv.Key) + "\x00"
			name := strings.TrimPrefix(string(kv.Key), prefix)
			rec, ok := got.Nodes[state.Ref{Project: f.Project, Name: name}]
			if !ok || !f.Selector.Matches(rec.Msg.GetMetadata().GetLabels()) || (len(f.Names) > 0 && !f.Names[name]) {
				continue
			}
			nodeKVs = append(nodeKVs, kv)
			names = append(names, name)
			anyMACs = anyMACs || len(rec.Msg.GetSpec().GetMacs()) > 0
		}
	}
	if len(names) == 0 {
		return &sanbootv1.ListNodesResponse{Revision: rev}, nil
	}
	if specOnly {
		st := s.storeOf(rev, nodeKVs)
		items := make([]*sanbootv1.Node, len(names))
		for k, name := range names { // in key order: sorted by name
			items[k] = view.NodeRecord(st, state.Ref{Project: f.Project, Name: name})
		}
		return s.cutPage(items, p, rev, more)
	}
	first, last := names[0], names[len(names)-1]
	at := clientv3.WithRev(rev)
	ops := []clientv3.Op{
		clientv3.OpGet(api.PlacementKey(f.Project, first), clientv3.WithRange(api.PlacementKey(f.Project, last)+"\x00"), at),
		listKeys(api.AlivePrefix(), at),
		list(api.AgentsPrefix(), at),
	}
	if anyMACs {
		ops = append(ops, list(api.MACsPrefix(), at))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, listError(ctx, err)
	}
	kvss := [][]*mvccpb.KeyValue{nodeKVs}
	for _, r := range resp.Responses {
		kvss = append(kvss, r.GetResponseRange().GetKvs())
	}
	// A status key starts with its agent: one range per placed agent.
	placed := state.New(s.log, state.Placements)
	placed.Apply(state.BatchFromKVs(rev, kvss[1]))
	var agents []string
	for _, pl := range placed.Placements {
		if a := pl.Msg.GetAgent(); a != "" && !slices.Contains(agents, a) {
			agents = append(agents, a)
		}
	}
	for chunk := range slices.Chunk(agents, statusRangesPerTxn) {
		var ops []clientv3.Op
		for _, a := range chunk {
			ops = append(ops, clientv3.OpGet(api.NodeStatusKey(f.Project, first, a),
				clientv3.WithRange(api.NodeStatusKey(f.Project, last, a)+"\x00"), at))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, listError(ctx, err)
		}
		for _, r := range resp.Responses {
			kvss = append(kvss, r.GetResponseRange().GetKvs())
		}
	}
	return s.cutPage(view.Nodes(s.storeOf(rev, kvss...), f), p, rev, more)
}

// cutPage is the response of a page of listNodesPage: items, read at rev,
// cut to the page's size in bytes; more says whether keys follow them.
func (s *Server) cutPage(items []*sanbootv1.Node, p pager, rev int64, more bool) (*sanbootv1.ListNodesResponse, error) {
	nodes, next, err := page(pager{size: p.size}, items, func(n *sanbootv1.Node) string { return metaKey(n.GetMetadata()) }, rev, "nodes")
	if err != nil {
		return nil, err
	}
	if next == "" && more {
		next = pageToken(rev, metaKey(nodes[len(nodes)-1].GetMetadata()))
	}
	return &sanbootv1.ListNodesResponse{Nodes: nodes, Revision: rev, NextPageToken: next}, nil
}

// listError maps the error of a read of a list to a gRPC status.
func listError(ctx context.Context, err error) error {
	if errors.Is(err, rpctypes.ErrCompacted) {
		return errCompactedWhilePaging
	}
	return etcdError(ctx, "read", err)
}

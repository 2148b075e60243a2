package apiserver

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/kv"
)

// The MAC index (api.MACKey) gives every MAC to one node, across projects:
// the boot server serves a MAC only to the one node that lists it. A node
// write claims the MACs its spec lists in the same transaction as the node,
// each compared absent (or unchanged, when already the node's), and
// releases those it no longer lists; so two writes that want one MAC cannot
// both commit. Deleting a node releases its MACs.

// macOwner is the index record of a MAC owned by node ref.
func macOwner(ref state.Ref, uid string) *sanbootv1.ObjectMeta {
	return &sanbootv1.ObjectMeta{Project: ref.Project, Name: ref.Name, Uid: uid}
}

// claimMACsFresh is what creating node ref (uid) with macs adds to its
// transaction when nobody was asked: every MAC compared absent. A failed
// comparison sends the caller down the general path, which says who owns it.
func claimMACsFresh(ref state.Ref, uid string, macs []string) ([]clientv3.Cmp, []clientv3.Op, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, mac := range macs {
		put, err := kv.PutOp(api.MACKey(mac), macOwner(ref, uid))
		if err != nil {
			return nil, nil, apiError(err)
		}
		cmps = append(cmps, kv.Unchanged(api.MACKey(mac), 0))
		ops = append(ops, put)
	}
	return cmps, ops, nil
}

// readMACs reads the index records of macs.
func (s *Server) readMACs(ctx context.Context, macs ...string) (*state.Store, error) {
	ops := make([]clientv3.Op, 0, len(macs))
	for _, mac := range slices.Compact(slices.Sorted(slices.Values(macs))) {
		ops = append(ops, get(api.MACKey(mac)))
	}
	return s.read(ctx, ops...)
}

// claimMACs is what writing node ref (uid) with the MACs want, where it
// listed had before, adds to the write: the MACs it keeps compared
// unchanged, the new ones compared absent and claimed, the dropped ones
// released. A MAC another node owns is FailedPrecondition, naming it.
func (s *Server) claimMACs(ctx context.Context, ref state.Ref, uid string, want, had []string) ([]clientv3.Cmp, []clientv3.Op, error) {
	if len(want) == 0 && len(had) == 0 {
		return nil, nil, nil
	}
	idx, err := s.readMACs(ctx, append(slices.Clone(want), had...)...)
	if err != nil {
		return nil, nil, err
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for i, mac := range want {
		key := api.MACKey(mac)
		rec, ok := idx.MACs[mac]
		switch {
		case !ok:
			put, err := kv.PutOp(key, macOwner(ref, uid))
			if err != nil {
				return nil, nil, apiError(err)
			}
			cmps, ops = append(cmps, kv.Unchanged(key, 0)), append(ops, put)
		case rec.Msg.GetProject() == ref.Project && rec.Msg.GetName() == ref.Name:
			cmps = append(cmps, kv.Unchanged(key, rec.ModRevision))
		default:
			return nil, nil, status.Errorf(codes.FailedPrecondition,
				"spec.macs[%d]: MAC %s belongs to node %s/%s (in its spec.macs); a MAC boots one node: remove it from that node first, or give this node another MAC",
				i, mac, rec.Msg.GetProject(), rec.Msg.GetName())
		}
	}
	release, rcmps := releaseMACs(idx, ref, slices.DeleteFunc(slices.Clone(had), func(m string) bool { return slices.Contains(want, m) }))
	return append(cmps, rcmps...), append(ops, release...), nil
}

// releaseMACs deletes the index records of the MACs that node ref owns
// among macs, each compared unchanged; idx holds them.
func releaseMACs(idx *state.Store, ref state.Ref, macs []string) ([]clientv3.Op, []clientv3.Cmp) {
	var ops []clientv3.Op
	var cmps []clientv3.Cmp
	for _, mac := range macs {
		if owner, ok := idx.MACOwner(mac); ok && owner == ref {
			ops = append(ops, clientv3.OpDelete(api.MACKey(mac)))
			cmps = append(cmps, kv.Unchanged(api.MACKey(mac), idx.MACs[mac].ModRevision))
		}
	}
	return ops, cmps
}

// IndexMACs gives every MAC that nodes list and the index lacks to the
// oldest node that lists it (nodes written before MACs were indexed), and
// logs each MAC that several nodes share: the boot server serves it to
// none of them, and their statuses say so. It changes nothing for a MAC
// already indexed; a node written meanwhile makes its claim fail, which
// is fine (that write indexed it). It returns the shared MACs.
func (s *Server) IndexMACs(ctx context.Context) (map[string][]state.Ref, error) {
	st, err := s.read(ctx, list(api.NodesPrefix("")), list(api.MACsPrefix()))
	if err != nil {
		return nil, err
	}
	refs := make([]state.Ref, 0, len(st.Nodes))
	for ref, n := range st.Nodes {
		if n.Msg.GetMetadata().GetDeleteTime() == nil && len(n.Msg.GetSpec().GetMacs()) > 0 {
			refs = append(refs, ref)
		}
	}
	// Oldest first: the node that had a MAC first keeps it.
	slices.SortFunc(refs, func(a, b state.Ref) int {
		ta, tb := st.Nodes[a].Msg.GetMetadata().GetCreateTime().AsTime(), st.Nodes[b].Msg.GetMetadata().GetCreateTime().AsTime()
		return cmp.Or(ta.Compare(tb), cmp.Compare(st.Nodes[a].ModRevision, st.Nodes[b].ModRevision))
	})
	users := map[string][]state.Ref{}
	claimed := 0
	for _, ref := range refs {
		n := st.Nodes[ref]
		for _, m := range n.Msg.GetSpec().GetMacs() {
			mac, err := api.NormalizeMAC("spec.macs", m)
			if err != nil {
				continue
			}
			users[mac] = append(users[mac], ref)
			if _, ok := st.MACs[mac]; ok || len(users[mac]) > 1 {
				continue
			}
			put, err := kv.PutOp(api.MACKey(mac), macOwner(ref, n.Msg.GetMetadata().GetUid()))
			if err != nil {
				return nil, err
			}
			if _, err := s.write(ctx, []clientv3.Cmp{kv.Unchanged(api.MACKey(mac), 0),
				kv.Unchanged(api.NodeKey(ref.Project, ref.Name), n.ModRevision)}, put); err == nil {
				claimed++
			} else if !errors.Is(err, kv.ErrConflict) {
				return nil, err
			}
		}
	}
	shared := map[string][]state.Ref{}
	for mac, rs := range users {
		if len(rs) < 2 {
			continue
		}
		shared[mac] = rs
		names := make([]string, len(rs))
		for i, r := range rs {
			names[i] = r.String()
		}
		s.log.Warn("a MAC is in the spec.macs of several nodes (written before sanboot refused that): the boot server serves it "+
			"to none of them; remove it from all but one", "mac", mac, "nodes", strings.Join(names, ", "))
	}
	if claimed > 0 || len(shared) > 0 {
		s.log.Info("MAC index built for nodes written before it existed", "claimed", claimed, "shared", len(shared))
	}
	return shared, nil
}

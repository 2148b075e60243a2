// Package migrate moves records written in an older key layout to the one
// api/keys.go describes. A member runs it when it starts, before it serves.
//
// The older layout keyed the records agents write by project first
// (replicas/<project>/<image>/<agent>, nodestatus/<project>/<node>), which
// etcd's prefix permissions cannot confine to one agent. The current one
// puts the agent first (imagereplicas/<agent>/<project>/<image>,
// nodestatus/<agent>/<project>/<node>); a status's agent is the node's
// placed agent.
//
// Run is idempotent and safe beside other members doing the same: each
// move is a transaction that compares the old key (and, for a status, the
// node's placement) with what was read, writes the new key only if it does
// not exist yet (an upgraded agent's report is newer), and deletes the old
// one. A move that lost a race is read and tried again.
package migrate

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
)

// The prefixes of the older layout.
const (
	OldReplicasPrefix   = api.Prefix + "replicas/"
	OldNodeStatusPrefix = api.Prefix + "nodestatus/"
)

// movesPerTxn keeps a transaction well under etcd's --max-txn-ops (128):
// a move is up to two comparisons and two operations, one nested.
const movesPerTxn = 30

// rounds bounds how often keys that changed under a move are read again.
const rounds = 5

// Result counts what Run did.
type Result struct {
	// Moved keys now live under the current layout (or were deleted
	// because their new key held a newer report already); Dropped were
	// statuses of nodes with no placed agent (their agent, once placed,
	// reports again).
	Moved, Dropped int
}

// move is one old key's transaction.
type move struct {
	old     string
	cmps    []clientv3.Cmp
	ops     []clientv3.Op
	dropped bool
}

// Run moves every key of the older layout to the current one.
func Run(ctx context.Context, cli *clientv3.Client, log *slog.Logger) (Result, error) {
	var res Result
	for round := 1; ; round++ {
		moves, err := plan(ctx, cli, log)
		if err != nil {
			return res, err
		}
		if len(moves) == 0 {
			return res, nil
		}
		if round > rounds {
			return res, fmt.Errorf("%d keys of the older layout (first: %s) keep changing while they are moved: "+
				"an agent of an older release may still write them; upgrade it, then restart this member", len(moves), moves[0].old)
		}
		for len(moves) > 0 {
			n := min(len(moves), movesPerTxn)
			if err := commit(ctx, cli, moves[:n], &res); err != nil {
				return res, err
			}
			moves = moves[n:]
		}
		log.Info("moved records of the older key layout", "round", round, "moved", res.Moved, "dropped", res.Dropped)
	}
}

// commit writes moves in one transaction, or one by one when a comparison
// fails; a move that fails alone is left for the next round.
func commit(ctx context.Context, cli *clientv3.Client, moves []move, res *Result) error {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, m := range moves {
		cmps, ops = append(cmps, m.cmps...), append(ops, m.ops...)
	}
	resp, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("move records of the older key layout: %w", err)
	}
	if resp.Succeeded {
		for _, m := range moves {
			if m.dropped {
				res.Dropped++
			} else {
				res.Moved++
			}
		}
		return nil
	}
	if len(moves) == 1 {
		return nil
	}
	for _, m := range moves {
		if err := commit(ctx, cli, []move{m}, res); err != nil {
			return err
		}
	}
	return nil
}

// plan reads the keys of the older layout, and the placements, and
// returns their moves.
func plan(ctx context.Context, cli *clientv3.Client, log *slog.Logger) ([]move, error) {
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(OldReplicasPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(OldNodeStatusPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(api.PlacementsPrefix(""), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read records of the older key layout: %w", err)
	}
	var moves []move
	for _, e := range resp.Responses[0].GetResponseRange().GetKvs() {
		key := string(e.Key)
		parts := strings.Split(strings.TrimPrefix(key, OldReplicasPrefix), "/")
		if len(parts) != 3 || validNames(parts...) != nil {
			log.Warn("not moving a key of the older layout that is not replicas/<project>/<image>/<agent>; delete it", "key", key)
			continue
		}
		moves = append(moves, moveTo(key, e.ModRevision, string(e.Value), api.ReplicaKey(parts[0], parts[1], parts[2])))
	}
	placements := map[string]*mvccpb.KeyValue{}
	for _, e := range resp.Responses[2].GetResponseRange().GetKvs() {
		placements[string(e.Key)] = e
	}
	for _, e := range resp.Responses[1].GetResponseRange().GetKvs() {
		key := string(e.Key)
		parts := strings.Split(strings.TrimPrefix(key, OldNodeStatusPrefix), "/")
		if len(parts) != 2 {
			continue // nodestatus/<agent>/<project>/<node>: the current layout
		}
		if err := validNames(parts...); err != nil {
			log.Warn("not moving a key of the older layout that is not nodestatus/<project>/<node>; delete it", "key", key)
			continue
		}
		// The status goes to the node's placed agent, comparing the
		// placement; a node with no placed agent loses the old status (no
		// reader shows it, and its agent reports again once it has one).
		plKey := api.PlacementKey(parts[0], parts[1])
		var plRev int64
		pl := &sanbootv1.Placement{}
		if p, ok := placements[plKey]; ok {
			plRev = p.ModRevision
			if err := proto.Unmarshal(p.Value, pl); err != nil {
				log.Warn("not moving a node status: its placement cannot be decoded", "key", key, "placement", plKey, "err", err)
				continue
			}
		}
		if pl.GetAgent() == "" {
			moves = append(moves, move{old: key, dropped: true,
				cmps: []clientv3.Cmp{kv.Unchanged(key, e.ModRevision), kv.Unchanged(plKey, plRev)},
				ops:  []clientv3.Op{clientv3.OpDelete(key)}})
			continue
		}
		m := moveTo(key, e.ModRevision, string(e.Value), api.NodeStatusKey(parts[0], parts[1], pl.GetAgent()))
		m.cmps = append(m.cmps, kv.Unchanged(plKey, plRev))
		moves = append(moves, m)
	}
	return moves, nil
}

// moveTo writes value at key to unless it exists, and deletes old.
func moveTo(old string, rev int64, value, to string) move {
	return move{old: old,
		cmps: []clientv3.Cmp{kv.Unchanged(old, rev)},
		ops: []clientv3.Op{
			clientv3.OpTxn([]clientv3.Cmp{kv.Unchanged(to, 0)}, []clientv3.Op{clientv3.OpPut(to, value)}, nil),
			clientv3.OpDelete(old),
		}}
}

func validNames(names ...string) error {
	for _, n := range names {
		if err := api.ValidateName("name", n); err != nil {
			return err
		}
	}
	return nil
}

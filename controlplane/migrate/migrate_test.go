package migrate_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/migrate"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
	"github.com/sanboot/sanboot/internal/etcdtest"
)

func marshal(t *testing.T, m proto.Message) string {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMovesTheOlderLayout: a store written in the older layout (replicas
// and statuses keyed by project first) reads the same after Run, every old
// key is gone, and a second Run changes nothing.
func TestMovesTheOlderLayout(t *testing.T) {
	ctx := context.Background()
	cli := etcdtest.Start(t).Client(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	ready := &sanbootv1.NodeStatus{Phase: api.PhaseReady, Agent: "s1", TargetIqn: "iqn.x", ObservedGeneration: 1}
	old := map[string]string{
		// An image held by two agents, and more replicas than one
		// transaction moves.
		migrate.OldReplicasPrefix + "default/ubuntu/s1": marshal(t, &sanbootv1.ImageReplica{Agent: "s1", Phase: api.ReplicaReady, Sha256: "abc"}),
		migrate.OldReplicasPrefix + "default/ubuntu/s2": marshal(t, &sanbootv1.ImageReplica{Agent: "s2", Phase: api.ReplicaPending}),
		// A placed node's status moves to its agent's key.
		migrate.OldNodeStatusPrefix + "default/n1": marshal(t, ready),
		// An unplaced node's status has no agent: it goes.
		migrate.OldNodeStatusPrefix + "default/n2": marshal(t, &sanbootv1.NodeStatus{Phase: api.PhaseFailed}),
		// The node's agent, upgraded, reported already: its report stays.
		migrate.OldNodeStatusPrefix + "default/n3": marshal(t, &sanbootv1.NodeStatus{Phase: api.PhasePending, Message: "old"}),
		api.NodeStatusKey("default", "n3", "s2"):   marshal(t, &sanbootv1.NodeStatus{Phase: api.PhaseReady, Message: "new"}),
		// Not a key of either layout: left alone, and said so.
		migrate.OldReplicasPrefix + "default/ubuntu": "junk",

		api.NodeKey("default", "n1"):      marshal(t, &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Generation: 1}, Spec: &sanbootv1.NodeSpec{Image: "ubuntu"}}),
		api.PlacementKey("default", "n1"): marshal(t, &sanbootv1.Placement{Agent: "s1", Reason: api.ReasonScheduled}),
		api.PlacementKey("default", "n2"): marshal(t, &sanbootv1.Placement{Reason: api.ReasonNoAgent}),
		api.PlacementKey("default", "n3"): marshal(t, &sanbootv1.Placement{Agent: "s2", Reason: api.ReasonScheduled}),
		api.AliveKey("s1"):                "",
	}
	for i := range 70 {
		old[fmt.Sprintf("%sp%d/img/s1", migrate.OldReplicasPrefix, i)] = marshal(t, &sanbootv1.ImageReplica{Agent: "s1", Phase: api.ReplicaReady})
	}
	for k, v := range old {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}

	res, err := migrate.Run(ctx, cli, log)
	if err != nil {
		t.Fatal(err)
	}
	if want := (migrate.Result{Moved: 2 + 70 + 2, Dropped: 1}); res != want {
		t.Errorf("Run = %+v, want %+v", res, want)
	}

	read := func() (*clientv3.GetResponse, *state.Store) {
		resp, err := cli.Get(ctx, api.Prefix, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		st := state.New(log, state.Nodes, state.Placements, state.NodeStatus, state.Replicas, state.Alive)
		st.Apply(state.BatchFromKVs(resp.Header.Revision, resp.Kvs))
		return resp, st
	}
	resp, st := read()
	if r, err := cli.Get(ctx, migrate.OldReplicasPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()); err != nil || len(r.Kvs) != 1 {
		t.Errorf("old replica keys left: %v (%v); want only the one of neither layout", r.Kvs, err)
	}
	if got := st.Replicas[state.Ref{Project: "default", Name: "ubuntu"}]; got["s1"].Msg.GetSha256() != "abc" || got["s2"].Msg.GetPhase() != api.ReplicaPending || len(got) != 2 {
		t.Errorf("replicas of default/ubuntu = %v", got)
	}
	if got := len(st.Replicas); got != 71 {
		t.Errorf("%d images have replicas, want 71", got)
	}
	if n := view.Node(st, state.Ref{Project: "default", Name: "n1"}); n.GetStatus().GetPhase() != api.PhaseReady || n.GetStatus().GetTargetIqn() != "iqn.x" {
		t.Errorf("n1's status after the move = %v", n.GetStatus())
	}
	if got := st.Status[state.Ref{Project: "default", Name: "n2"}]; len(got) != 0 {
		t.Errorf("the unplaced n2 has statuses %v", got)
	}
	if got, _ := st.StatusOf(state.Ref{Project: "default", Name: "n3"}); got.Msg.GetMessage() != "new" {
		t.Errorf("n3's status = %v, want the agent's newer report", got.Msg)
	}
	for _, k := range []string{migrate.OldNodeStatusPrefix + "default/n1", migrate.OldNodeStatusPrefix + "default/n2", migrate.OldNodeStatusPrefix + "default/n3"} {
		if r, err := cli.Get(ctx, k); err != nil || len(r.Kvs) != 0 {
			t.Errorf("old status %s is still there (%v)", k, err)
		}
	}
	if r, err := cli.Get(ctx, migrate.OldReplicasPrefix+"default/ubuntu"); err != nil || string(r.Kvs[0].Value) != "junk" {
		t.Errorf("a key of neither layout was touched: %v %v", r, err)
	}

	// Again: nothing to do, nothing written.
	res, err = migrate.Run(ctx, cli, log)
	if err != nil || res != (migrate.Result{}) {
		t.Errorf("second Run = %+v, %v; want nothing done", res, err)
	}
	if again, _ := read(); again.Header.Revision != resp.Header.Revision {
		t.Errorf("second Run wrote: revision %d -> %d", resp.Header.Revision, again.Header.Revision)
	}
}

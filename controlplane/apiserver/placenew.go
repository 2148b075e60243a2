package apiserver

import (
	etcdserverpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/placement"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/kv"
)

// Placement at creation. A new node whose agent the scheduler would pick
// whatever the agents' loads (placement.Forced: its pinned agent, or the
// only live agent holding a Ready replica of its image) is placed in the
// transaction that creates it: the placement and the assignment the
// scheduler would write, in a transaction nested in the create, which
// saves a scheduler transaction (a WAL fsync, and the scheduler's watch
// and queue) on the way from PutNode to Ready.
//
// The decision is made on this member's informer (possibly behind etcd),
// and the nested transaction compares everything it read, so that it
// places the node only if the decision still holds when the create
// commits: the agent's alive key is the one seen (the same lease: a dead
// agent's key is gone, a restarted agent's is new), its replica of the
// image unchanged (still Ready), and no placement, assignment or status
// of the node exists (nor its CHAP secret, which the assignment copies:
// the create makes it). When a comparison fails the node is created all
// the same, unplaced, and the scheduler places it as any other. The
// records are the scheduler's own (placement.Placed and
// placement.Assignment), so the scheduler then finds the node up to date,
// and treats it in every later step (spec changes, its agent's death and
// failover in a storage domain, deletion) as a node it placed itself.
//
// The scheduler's leader fence is not needed: it keeps a deposed leader's
// decisions, made on what it saw while it led, from landing after a new
// leader's; no scheduler can have decided anything about a node that does
// not exist yet, and this transaction compares the node absent.

// placeAtCreate is the placement of a node in the transaction that
// creates it.
type placeAtCreate struct {
	agent    string
	aliveRev int64 // the mod_revision of the agent's alive key compared
	rec      *sanbootv1.Placement
	at       int // the index of the nested transaction in the create's ops
}

// placeNew adds, to each of creates whose node's agent is forced, the
// nested transaction that places it.
func (s *Server) placeNew(creates []*nodeCreate) {
	if len(creates) == 0 {
		return
	}
	st := s.cfg.Informer.RLock()
	forced := make([]forcedAgent, len(creates))
	for k, c := range creates {
		forced[k] = forcedOf(st, c.rec)
	}
	s.cfg.Informer.RUnlock()
	for k, c := range creates {
		s.placeIn(c, forced[k])
	}
}

// forcedAgent is the agent placement.Forced names for a new node, and
// what the decision read (compared in the create): the mod_revisions of
// the agent's alive key and of its replica of the node's image.
type forcedAgent struct {
	agent                string
	aliveRev, replicaRev int64
}

// forcedOf is the agent placement.Forced names for n in st (agent "" when
// none). It only reads st: the records are built outside the informer's
// lock (placeIn).
func forcedOf(st *state.Store, n *sanbootv1.Node) forcedAgent {
	agent := placement.Forced(st, n)
	if agent == "" {
		return forcedAgent{}
	}
	img := state.Ref{Project: n.GetMetadata().GetProject(), Name: n.GetSpec().GetImage()}
	return forcedAgent{agent: agent, aliveRev: st.Alive[agent], replicaRev: st.Replicas[img][agent].ModRevision}
}

// placeIn adds to c the nested transaction that places its node on f's
// agent, if any.
func (s *Server) placeIn(c *nodeCreate, f forcedAgent) {
	if err := c.placeOn(f); err != nil {
		s.log.Warn("cannot place a new node with its creation; the scheduler will", "node", c.ref, "err", err)
	}
}

// placeOn adds to c the nested transaction that places its node on f's
// agent, if any.
func (c *nodeCreate) placeOn(f forcedAgent) error {
	agent := f.agent
	if agent == "" {
		return nil
	}
	ref, spec := c.ref, c.rec.GetSpec()
	rec := placement.Placed(agent, c.rec.GetMetadata().GetGeneration())
	put, err := kv.PutOp(api.PlacementKey(ref.Project, ref.Name), rec)
	if err != nil {
		return err
	}
	assign, err := kv.PutOp(api.AssignKey(agent, ref.Project, ref.Name), placement.Assignment(ref, c.rec, c.secret))
	if err != nil {
		return err
	}
	cmps := []clientv3.Cmp{
		kv.Unchanged(api.AliveKey(agent), f.aliveRev),
		kv.Unchanged(api.ReplicaKey(ref.Project, spec.GetImage(), agent), f.replicaRev),
		kv.Unchanged(api.PlacementKey(ref.Project, ref.Name), 0),
		kv.Unchanged(api.AssignKey(agent, ref.Project, ref.Name), 0),
		kv.Unchanged(api.NodeStatusKey(ref.Project, ref.Name, agent), 0),
	}
	if c.secret != nil {
		cmps = append(cmps, kv.Unchanged(api.SecretKey(ref.Project, ref.Name), 0))
	}
	c.place = &placeAtCreate{agent: agent, aliveRev: f.aliveRev, rec: rec, at: len(c.ops)}
	c.ops = append(c.ops, clientv3.OpTxn(cmps, []clientv3.Op{put, assign}, nil))
	return nil
}

// done says whether the create whose Then responses are responses placed
// the node (false for a nil p).
func (p *placeAtCreate) done(responses []*etcdserverpb.ResponseOp) bool {
	return p != nil && p.at < len(responses) && responses[p.at].GetResponseTxn().GetSucceeded()
}

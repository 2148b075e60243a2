// Package scheduler is the controller that puts nodes on agents and takes
// them off again (docs/design.md: placement is sticky, deletion takes two
// steps, writes are batched).
//
// It reads sanboot's records from the member's informer (one shared watch
// of api.Prefix, see package informer), queues the keys of affected nodes in a keyed work queue, and for each node makes
// etcd hold what it should:
//
//   - a node without a placement gets one (package placement decides):
//     its pinned agent (spec.agent) when that agent is alive and holds a
//     Ready replica of the image, else the live agent with a Ready replica
//     and the fewest assignments (ties: by name). Placement and Assignment
//     are written in one transaction that compares the mod_revisions it
//     decided on. A node no agent can take gets a Placement with an empty
//     agent and a message, and is tried again when agents or replicas
//     change. (A new node whose agent is forced, pinned or the only
//     candidate, the API server places in the transaction that creates
//     it, with the same records: the scheduler finds it up to date.)
//   - a placed node never moves (its disk lives there), unless its agent is
//     unavailable and another agent of its storage domain can serve the
//     same disk (failover.go); spec changes are copied into its Assignment.
//   - a node with delete_time gets assignment.deleting; once its agent
//     reports phase Deleted, the node, placement, status and assignment are
//     deleted in one transaction. A node never placed is deleted at once.
//   - a status another agent than the node's reported (the node moved) is
//     deleted, as is an assignment to another agent.
//
// Many nodes' writes go into one transaction; when such a batch fails, each
// node is tried on its own so that one conflict does not hold up the rest.
//
// With several control-plane members the scheduler runs on the elected
// leader only, and every transaction also compares the leader's election
// key (Config.Fence): a deposed leader's late writes fail, and the
// scheduler stops with kv.ErrDeposed. A new leader starts from what etcd
// holds, so a placement is made once whoever makes it: its scheduler waits
// until the member's informer has seen the revision of the election it
// won, then plans every node from the informer's store at once, without
// reading etcd again.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/informer"
	"github.com/sanboot/sanboot/controlplane/placement"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/kv"
	"github.com/sanboot/sanboot/internal/workqueue"
)

// maxTxnOps is etcd's default limit on the operations (and on the
// comparisons) of one transaction (--max-txn-ops).
const maxTxnOps = 128

// Config tunes the scheduler; the zero value is usable.
type Config struct {
	Log *slog.Logger
	// BatchNodes is the most nodes written in one transaction (default 40).
	BatchNodes int
	// RetryBase and RetryMax bound the backoff of a node whose write failed
	// (default 50ms and 5s).
	RetryBase, RetryMax time.Duration
	// OnRetry, if set, is called for each node queued again after a
	// failed plan or write (a metric).
	OnRetry func()
	// Fence, if set, is the leadership every write is conditional on
	// (leader.Run hands it over).
	Fence kv.Fence
	// Informer is the member's shared watch of etcd, which the scheduler
	// plans from; the caller runs it. Nil: the scheduler makes its own and
	// Run runs it.
	Informer *informer.Informer
}

// Scheduler places nodes. Create it with New and call Run.
type Scheduler struct {
	cli   *clientv3.Client
	log   *slog.Logger
	cfg   Config
	queue *workqueue.Queue[state.Ref]
	// stop ends Run early with its cause (kv.ErrDeposed).
	stop context.CancelCauseFunc
	inf  *informer.Informer
	// ownInformer says Run runs inf.
	ownInformer bool

	// Lock order: the informer's lock, then mu (lock takes both). The
	// informer calls handle under its write lock.
	mu sync.Mutex
	// store is the informer's: read it under the informer's lock.
	store *state.Store
	// written holds the nodes this scheduler wrote and the store has not
	// yet seen: the revision of the write, and the agent of a new
	// placement (counted as load until its assignment shows up).
	written         map[state.Ref]write
	writtenPerAgent map[string]int
}

type write struct {
	rev   int64
	agent string
}

// New returns a scheduler over cli.
func New(cli *clientv3.Client, cfg Config) *Scheduler {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.BatchNodes <= 0 {
		cfg.BatchNodes = 40
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 50 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Second
	}
	log := cfg.Log.With("controller", "scheduler")
	s := &Scheduler{
		cli:             cli,
		log:             log,
		cfg:             cfg,
		queue:           workqueue.New[state.Ref](cfg.RetryBase, cfg.RetryMax),
		inf:             cfg.Informer,
		written:         map[state.Ref]write{},
		writtenPerAgent: map[string]int{},
	}
	if s.inf == nil {
		s.inf, s.ownInformer = informer.New(cli, cfg.Log), true
	}
	s.store = s.inf.RLock()
	s.inf.RUnlock()
	return s
}

// lock takes the informer's read lock, then mu.
func (s *Scheduler) lock() {
	s.inf.RLock()
	s.mu.Lock()
}

func (s *Scheduler) unlock() {
	s.mu.Unlock()
	s.inf.RUnlock()
}

// Run schedules until ctx ends. A Scheduler runs once.
func (s *Scheduler) Run(ctx context.Context) error {
	s.log.Info("scheduler starting")
	ctx, s.stop = context.WithCancelCause(ctx)
	defer s.stop(nil)
	var wg sync.WaitGroup
	if s.ownInformer {
		wg.Go(func() { s.inf.Run(ctx) })
	}
	wg.Go(func() {
		<-ctx.Done()
		s.queue.ShutDown()
	})
	if err := s.start(ctx); err != nil {
		s.stop(err)
	}
	for {
		refs, ok := s.queue.GetBatch(s.cfg.BatchNodes * 4)
		if !ok {
			break
		}
		s.process(ctx, refs)
	}
	wg.Wait()
	s.log.Info("scheduler stopped")
	return context.Cause(ctx)
}

// start waits until the informer has seen the revision of the election
// this scheduler's member won (or has listed, without a fence), then
// follows it: its first update queues every node.
func (s *Scheduler) start(ctx context.Context) error {
	if err := s.inf.WaitSynced(ctx); err != nil {
		return fmt.Errorf("wait for the member's watch to list: %w", err)
	}
	if s.cfg.Fence.Enabled() {
		if err := s.inf.WaitRevision(ctx, s.cfg.Fence.CreateRevision); err != nil {
			return fmt.Errorf("wait for the member's watch to reach the election's revision %d: %w", s.cfg.Fence.CreateRevision, err)
		}
	}
	remove := s.inf.AddHandler(s.handle)
	context.AfterFunc(ctx, remove)
	return nil
}

// handle takes an informer update and queues the nodes it affects.
func (s *Scheduler) handle(u informer.Update) {
	s.mu.Lock()
	for ref, w := range s.written {
		if w.rev <= s.store.Revision {
			s.forgetWrite(ref)
		}
	}
	refs := map[state.Ref]bool{}
	if u.Resync {
		for _, m := range []map[state.Ref]bool{keys(s.store.Nodes), keys(s.store.Placements), keys(s.store.Status), keys(s.store.Assign)} {
			maps.Copy(refs, m)
		}
	}
	for _, c := range u.Changes {
		switch c.Kind {
		case state.Nodes, state.Placements, state.NodeStatus, state.Assign, state.Secrets:
			refs[c.Ref] = true
		case state.Alive, state.Agents:
			s.unplaced(refs, func(*sanbootv1.Node) bool { return true })
			s.stranded(refs) // nodes to fail over: see failover.go

			for ref, n := range s.store.Nodes { // forced deletions wait for an agent to go
				if n.Msg.GetMetadata().GetForceDelete() {
					refs[ref] = true
				}
			}
		case state.Replicas:
			s.unplaced(refs, func(n *sanbootv1.Node) bool {
				return n.GetMetadata().GetProject() == c.Ref.Project && n.GetSpec().GetImage() == c.Ref.Name
			})
		}
	}
	s.mu.Unlock()
	for ref := range refs {
		s.queue.Add(ref)
	}
}

// unplaced adds to refs the nodes without an agent that match.
func (s *Scheduler) unplaced(refs map[state.Ref]bool, match func(*sanbootv1.Node) bool) {
	for ref, n := range s.store.Nodes {
		if s.store.Placements[ref].Msg.GetAgent() == "" && match(n.Msg) {
			refs[ref] = true
		}
	}
}

func keys[V any](m map[state.Ref]V) map[state.Ref]bool {
	out := make(map[state.Ref]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func (s *Scheduler) forgetWrite(ref state.Ref) {
	if w, ok := s.written[ref]; ok {
		if w.agent != "" {
			s.writtenPerAgent[w.agent]--
		}
		delete(s.written, ref)
	}
}

// plan is one node's transaction: comparisons and writes.
type plan struct {
	ref   state.Ref
	cmps  []clientv3.Cmp
	ops   []clientv3.Op
	agent string // set when the plan places the node on a new agent
	what  string // for the log
}

func (p *plan) put(key string, modRev int64, msg proto.Message) error {
	op, err := kv.PutOp(key, msg)
	if err != nil {
		return err
	}
	p.cmps = append(p.cmps, kv.Unchanged(key, modRev))
	p.ops = append(p.ops, op)
	return nil
}

func (p *plan) del(key string, modRev int64) {
	p.cmps = append(p.cmps, kv.Unchanged(key, modRev))
	p.ops = append(p.ops, clientv3.OpDelete(key))
}

// process plans the nodes of refs against the store, writes the plans in
// batched transactions, and marks each node done.
func (s *Scheduler) process(ctx context.Context, refs []state.Ref) {
	defer func() {
		for _, ref := range refs {
			s.queue.Done(ref)
		}
	}()
	var plans []*plan
	s.lock()
	picks := map[string]int{}
	for _, ref := range refs {
		if w, ok := s.written[ref]; ok && w.rev > s.store.Revision {
			continue // our own write is on its way; its event queues the node again
		}
		p, err := s.plan(ref, picks)
		switch {
		case err != nil:
			s.log.Error("cannot plan node; will retry", "node", ref, "err", err)
			s.retry(ref)
		case p == nil:
			s.queue.Forget(ref)
		default:
			plans = append(plans, p)
			if p.agent != "" {
				picks[p.agent]++
			}
		}
	}
	s.unlock()

	for len(plans) > 0 && ctx.Err() == nil {
		n, cmps, ops := 0, 0, 0
		if s.cfg.Fence.Enabled() {
			cmps = 1
		}
		for n < len(plans) && n < s.cfg.BatchNodes &&
			cmps+len(plans[n].cmps) <= maxTxnOps && ops+len(plans[n].ops) <= maxTxnOps {
			cmps, ops = cmps+len(plans[n].cmps), ops+len(plans[n].ops)
			n++
		}
		n = max(n, 1)
		s.commit(ctx, plans[:n])
		plans = plans[n:]
	}
}

// commit writes plans in one transaction, or one by one if that fails.
func (s *Scheduler) commit(ctx context.Context, plans []*plan) {
	rev, err := s.txn(ctx, plans)
	if err == nil {
		s.committed(plans, rev)
		return
	}
	if errors.Is(err, kv.ErrDeposed) {
		if ctx.Err() == nil {
			s.log.Warn("another member leads now: stopping without writing", "fence", s.cfg.Fence.Key)
		}
		s.stop(err)
		return
	}
	if ctx.Err() != nil {
		return
	}
	if len(plans) > 1 {
		s.log.Debug("batched write failed; writing nodes one by one", "nodes", len(plans), "err", err)
		for _, p := range plans {
			s.commit(ctx, []*plan{p})
		}
		return
	}
	p := plans[0]
	if errors.Is(err, kv.ErrConflict) {
		s.log.Debug("node changed while it was planned; will look again", "node", p.ref)
	} else if ctx.Err() == nil {
		s.log.Warn("cannot write node's placement; will retry", "node", p.ref, "err", err)
	}
	s.retry(p.ref)
}

func (s *Scheduler) retry(ref state.Ref) {
	if s.cfg.OnRetry != nil {
		s.cfg.OnRetry()
	}
	s.queue.AddRateLimited(ref)
}

// QueueLen is how many nodes wait to be looked at.
func (s *Scheduler) QueueLen() int { return s.queue.Len() }

func (s *Scheduler) txn(ctx context.Context, plans []*plan) (int64, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, p := range plans {
		cmps = append(cmps, p.cmps...)
		ops = append(ops, p.ops...)
	}
	fence := s.cfg.Fence
	var orElse []clientv3.Op
	if fence.Enabled() {
		cmps, orElse = append(cmps, fence.Cmp()), []clientv3.Op{fence.ElseOp()}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(orElse...).Commit()
	if err != nil {
		return 0, fmt.Errorf("write %d nodes: %w", len(plans), err)
	}
	if !resp.Succeeded {
		if fence.Enabled() && !fence.Held(resp) {
			return 0, kv.ErrDeposed
		}
		return 0, kv.ErrConflict
	}
	return resp.Header.Revision, nil
}

func (s *Scheduler) committed(plans []*plan, rev int64) {
	s.lock()
	defer s.unlock()
	for _, p := range plans {
		s.log.Debug(p.what, "node", p.ref, "agent", p.agent, "rev", rev)
		s.queue.Forget(p.ref)
		if rev <= s.store.Revision {
			continue // the store has seen it already
		}
		s.forgetWrite(p.ref)
		s.written[p.ref] = write{rev: rev, agent: p.agent}
		if p.agent != "" {
			s.writtenPerAgent[p.agent]++
		}
	}
}

// plan decides what node ref needs, or returns nil when it needs nothing.
// picks counts the placements decided earlier in the same batch. Called
// with s.mu held.
func (s *Scheduler) plan(ref state.Ref, picks map[string]int) (*plan, error) {
	st := s.store
	node, hasNode := st.Nodes[ref]
	pl, hasPl := st.Placements[ref]
	status, hasStatus := st.StatusOf(ref)
	statuses := st.Status[ref]
	assigns := st.Assign[ref]
	nodeKey := api.NodeKey(ref.Project, ref.Name)
	p := &plan{ref: ref}

	// finalize deletes every record of the node, comparing each.
	finalize := func(what string, withNode bool) *plan {
		p.what = what
		if withNode {
			p.del(nodeKey, node.ModRevision)
		} else {
			p.cmps = append(p.cmps, kv.Unchanged(nodeKey, 0))
		}
		if hasPl {
			p.del(api.PlacementKey(ref.Project, ref.Name), pl.ModRevision)
		}
		for agent, r := range statuses {
			p.del(api.NodeStatusKey(ref.Project, ref.Name, agent), r.ModRevision)
		}
		for agent, a := range assigns {
			p.del(api.AssignKey(agent, ref.Project, ref.Name), a.ModRevision)
		}
		if sec, ok := st.Secrets[ref]; ok {
			p.del(api.SecretKey(ref.Project, ref.Name), sec.ModRevision)
		}
		// The boot server's record of the node's last script fetch: an
		// observation, deleted without comparing (a fetch racing with the
		// deletion may write it again; it names the old uid, which no later
		// node of the name has).
		p.ops = append(p.ops, clientv3.OpDelete(api.BootFetchKey(ref.Project, ref.Name)))
		return p
	}

	if !hasNode {
		if !hasPl && len(statuses) == 0 && len(assigns) == 0 {
			return nil, nil
		}
		return finalize("removed the records of a node that no longer exists", false), nil
	}
	agent := pl.Msg.GetAgent()
	if node.Msg.GetMetadata().GetDeleteTime() != nil {
		a, hasA := assigns[agent]
		switch {
		case agent == "":
			return finalize("deleted a node that was never placed", true), nil
		case !hasA:
			return finalize("deleted a node whose assignment is gone", true), nil
		case hasStatus && status.Msg.GetPhase() == api.PhaseDeleted:
			return finalize("deleted a node its agent has torn down", true), nil
		case node.Msg.GetMetadata().GetForceDelete() && !st.IsAlive(agent):
			// Forced, and the agent is gone: its disk and target stay on
			// that host, unseen; the records go now.
			return finalize(fmt.Sprintf("force-deleted a node whose agent %q is unavailable (its disk stays on that host)", agent), true), nil
		}
		// Ask the agent to tear down, with the latest spec (DeleteNode may
		// have set keep_disk). A dead agent's node of a storage domain is
		// torn down by another agent of the domain (failover.go).
		p.cmps = append(p.cmps, kv.Unchanged(nodeKey, node.ModRevision))
		want := placement.Assignment(ref, node.Msg, st.Secrets[ref].Msg)
		want.Deleting = true
		if to := s.failoverTarget(agent, node.Msg, picks); to != "" {
			p.what = fmt.Sprintf("moved the teardown of a deleted node from unavailable agent %q to %q of its storage domain", agent, to)
			agent, p.agent = to, to
			if err := p.put(api.PlacementKey(ref.Project, ref.Name), pl.ModRevision,
				placement.Placed(to, node.Msg.GetMetadata().GetGeneration())); err != nil {
				return nil, err
			}
			a = assigns[to]
		}
		if !holds(a, want) {
			if err := p.put(api.AssignKey(agent, ref.Project, ref.Name), a.ModRevision, want); err != nil {
				return nil, err
			}
		}
		s.dropStrays(p, agent)
		if len(p.ops) == 0 {
			return nil, nil
		}
		if p.what == "" {
			p.what = "asked the agent to tear the node down"
		}
		return p, nil
	}

	gen := node.Msg.GetMetadata().GetGeneration()
	p.cmps = append(p.cmps, kv.Unchanged(nodeKey, node.ModRevision))
	if agent == "" {
		var reason, msg string
		agent, reason, msg = s.choose(node.Msg, picks)
		if agent == "" {
			want := &sanbootv1.Placement{Reason: reason, Message: msg, Generation: gen}
			if hasPl && proto.Equal(pl.Msg, want) {
				return nil, nil
			}
			p.what = "cannot place node: " + msg
			return p, p.put(api.PlacementKey(ref.Project, ref.Name), pl.ModRevision, want)
		}
		p.agent = agent
		p.what = "placed node"
	} else if to := s.failoverTarget(agent, node.Msg, picks); to != "" {
		p.what = fmt.Sprintf("moved node from unavailable agent %q to %q of its storage domain (no data copied)", agent, to)
		agent, p.agent = to, to
	} else {
		p.what = "updated node's assignment"
	}

	// A placed node: keep its placement and assignment up to date.
	want := placement.Placed(agent, gen)
	if pin := node.Msg.GetSpec().GetAgent(); pin != "" && pin != agent {
		want.Reason = api.ReasonPinIgnored
		want.Message = fmt.Sprintf("spec.agent is %q but the node's disk lives on %q and a placement never moves: delete the node and create it again to move it", pin, agent)
	}
	if !hasPl || !proto.Equal(pl.Msg, want) {
		if err := p.put(api.PlacementKey(ref.Project, ref.Name), pl.ModRevision, want); err != nil {
			return nil, err
		}
	}
	a := assigns[agent]
	if wantA := placement.Assignment(ref, node.Msg, st.Secrets[ref].Msg); !holds(a, wantA) {
		if err := p.put(api.AssignKey(agent, ref.Project, ref.Name), a.ModRevision, wantA); err != nil {
			return nil, err
		}
	}
	s.dropStrays(p, agent)
	if len(p.ops) == 0 {
		return nil, nil
	}
	return p, nil
}

// dropStrays deletes the node's assignments to agents other than its own
// (there are none unless someone wrote them by hand) and the statuses
// other agents reported of it (the node moved, or its agent changed while
// it was being placed): only its agent's status counts.
func (s *Scheduler) dropStrays(p *plan, agent string) {
	for other, a := range s.store.Assign[p.ref] {
		if other != agent {
			p.del(api.AssignKey(other, p.ref.Project, p.ref.Name), a.ModRevision)
		}
	}
	for other, r := range s.store.Status[p.ref] {
		if other != agent {
			p.del(api.NodeStatusKey(p.ref.Project, p.ref.Name, other), r.ModRevision)
		}
	}
}

// holds says whether the assignment record a (the zero Encoded when
// there is none) is want.
func holds(a state.Encoded, want *sanbootv1.Assignment) bool {
	cur, err := a.Assignment()
	return err == nil && cur != nil && proto.Equal(cur, want)
}

// choose picks the agent for an unplaced node (placement.Choose), its
// load being its assignments, the placements this scheduler wrote that the
// store has not seen, and those decided earlier in the same batch (picks).
func (s *Scheduler) choose(n *sanbootv1.Node, picks map[string]int) (agent, reason, msg string) {
	return placement.Choose(s.store, n, func(a string) int {
		return s.store.AssignCount(a) + s.writtenPerAgent[a] + picks[a]
	})
}

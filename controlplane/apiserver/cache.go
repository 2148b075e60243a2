package apiserver

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/informer"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
)

// cache follows the joined view of every node, fed by the member's
// informer (one etcd watch of api.Prefix, so the view is consistent at
// each revision), and fans out the views that actually changed to the
// WatchNodes streams.
//
// It does not hold the views: it computes one when asked (view.Node, from
// the informer's store) and keeps of each node only what it needs to tell
// whether its view changed and what changed (shown). With 10,000 nodes
// the views it held were 9 MB of a member's heap, their summaries are
// about 2.
//
// Lock order: the informer's lock, then mu. The informer calls handle
// under its write lock; everything else takes both with lock.
type cache struct {
	inf    *informer.Informer
	cli    *clientv3.Client
	log    *slog.Logger
	buffer int

	// synced is closed at the first update the informer hands over (all
	// it holds): from then on the views move with its store.
	synced  chan struct{}
	stopped chan struct{} // closed when run returns

	mu    sync.Mutex
	store *state.Store // the informer's; read under its lock
	views map[state.Ref]shown
	// deleting holds the whole last view (encoded) of each node whose
	// deletion was requested: when its records go, watchers get it in
	// their DELETED event.
	deleting map[state.Ref][]byte
	seed     maphash.Seed
	buf      []byte // encodes views in handle, under mu
	subs     map[*subscriber]struct{}
	// images and agents are the other views, for WatchImages and WatchAgents.
	images *viewSet[state.Ref, *sanbootv1.Image]
	agents *viewSet[string, *sanbootv1.Agent]
	closed bool
	// onChange, if set, sees every node view that changed (old or cur nil
	// when the node appeared or went), under mu.
	onChange func(old, cur *sanbootv1.Node)
	// waiting counts the watches waiting in catchUp for the cache to
	// reach their revision.
	waiting int
}

// subscriber is one WatchNodes stream.
type subscriber struct {
	filter view.NodeFilter
	events chan *sanbootv1.NodeEvent
	// dropped is closed when events overflowed; the stream then ends.
	dropped chan struct{}
}

func newCache(inf *informer.Informer, cli *clientv3.Client, log *slog.Logger, buffer int) *cache {
	c := &cache{
		inf:      inf,
		cli:      cli,
		log:      log.With("cache", "nodes"),
		buffer:   buffer,
		synced:   make(chan struct{}),
		stopped:  make(chan struct{}),
		views:    map[state.Ref]shown{},
		deleting: map[state.Ref][]byte{},
		seed:     maphash.MakeSeed(),
		subs:     map[*subscriber]struct{}{},
	}
	c.store = inf.RLock()
	inf.RUnlock()
	c.images = newViewSet("image", compareRefs, func() map[state.Ref]*sanbootv1.Image { return imageViews(c.store) })
	c.agents = newViewSet("agent", strings.Compare, func() map[string]*sanbootv1.Agent { return agentViews(c.store) })
	return c
}

// lock takes the informer's read lock, then mu.
func (c *cache) lock() {
	c.inf.RLock()
	c.mu.Lock()
}

func (c *cache) unlock() {
	c.mu.Unlock()
	c.inf.RUnlock()
}

// run follows the informer until ctx ends.
func (c *cache) run(ctx context.Context) {
	remove := c.inf.AddHandler(c.handle)
	defer func() {
		remove()
		c.mu.Lock()
		c.closed = true
		c.subs = map[*subscriber]struct{}{}
		c.images.subs = map[*objWatch[*sanbootv1.Image]]struct{}{}
		c.agents.subs = map[*objWatch[*sanbootv1.Agent]]struct{}{}
		c.mu.Unlock()
		close(c.stopped)
	}()
	select {
	case <-ctx.Done():
	case <-c.inf.Stopped():
	}
}

// handle applies a batch and sends what changed to the subscribers. It
// never blocks on a subscriber.
func (c *cache) handle(u informer.Update) {
	c.mu.Lock()
	defer c.mu.Unlock()
	changes := u.Changes
	affected := map[state.Ref]bool{}
	if u.Resync {
		for ref := range c.views {
			affected[ref] = true
		}
		for ref := range c.store.Nodes {
			affected[ref] = true
		}
	}
	for _, ch := range changes {
		switch ch.Kind {
		case state.Nodes, state.Placements, state.NodeStatus:
			affected[ch.Ref] = true
		case state.MACs:
			// The owner, and every node that lists the MAC (its view says
			// whether the MAC boots it).
			if ch.Ref != (state.Ref{}) {
				affected[ch.Ref] = true
			}
			for ref, n := range c.store.Nodes {
				if slices.Contains(n.Msg.GetSpec().GetMacs(), ch.Agent) {
					affected[ref] = true
				}
			}
		case state.Alive, state.Agents:
			// The agent's nodes, and, in a storage domain, every node of
			// the domain (their failover agents).
			domain := c.store.Agents[ch.Agent].Msg.GetStorageDomain()
			for ref, pl := range c.store.Placements {
				a := pl.Msg.GetAgent()
				if a == ch.Agent || (domain != "" && c.store.Agents[a].Msg.GetStorageDomain() == domain) {
					affected[ref] = true
				}
			}
		}
	}
	refs := slices.SortedFunc(maps.Keys(affected), func(a, b state.Ref) int {
		return cmp.Or(strings.Compare(a.Project, b.Project), strings.Compare(a.Name, b.Name))
	})
	tell := c.onChange != nil && !u.Resync
	for _, ref := range refs {
		was, had := c.views[ref]
		cur := view.Node(c.store, ref)
		var is shown
		switch {
		case cur == nil && !had:
			continue
		case cur != nil:
			is = c.summarize(ref, cur)
			if had && is.sum == was.sum {
				continue
			}
		}
		var old *sanbootv1.Node
		if had && (tell || len(c.subs) > 0) {
			old = c.lastView(ref, was)
		}
		switch {
		case cur == nil:
			delete(c.views, ref)
			delete(c.deleting, ref)
		case cur.GetMetadata().GetDeleteTime() != nil:
			c.views[ref] = is
			c.deleting[ref] = bytes.Clone(c.buf)
		default:
			c.views[ref] = is
			delete(c.deleting, ref)
		}
		if tell {
			c.onChange(old, cur)
		}
		for sub := range c.subs {
			if !sub.offer(old, cur, c.store.Revision) {
				delete(c.subs, sub)
				c.log.Warn("a node watcher fell behind; ending its stream so that it watches again", "buffer", c.buffer)
			}
		}
	}
	c.refreshObjects(changes, u.Resync)
	select {
	case <-c.synced:
	default:
		close(c.synced)
	}
}

// shown is what the cache keeps of the view it last showed of a node: a
// hash of its encoding, to tell whether a new view differs, and what
// nodeEvents, the metrics and the watch filters read of the old view —
// the node record it was made from (shared with the store: a store
// replaces a record when it changes) and its status' phase, message and
// agent.
type shown struct {
	sum                   uint64
	node                  state.Record[*sanbootv1.Node]
	phase, message, agent string
}

// summarize returns what the cache keeps of view v of node ref, leaving
// v's deterministic encoding in c.buf.
func (c *cache) summarize(ref state.Ref, v *sanbootv1.Node) shown {
	var err error
	c.buf, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(c.buf[:0], v)
	if err != nil {
		// A view always encodes; should one not, it counts as changed
		// at each revision that touches it.
		c.log.Error("encode a node view", "node", ref, "err", err)
		c.buf = fmt.Appendf(c.buf[:0], "no encoding at revision %d", c.store.Revision)
	}
	st := v.GetStatus()
	return shown{sum: maphash.Bytes(c.seed, c.buf), node: c.store.Nodes[ref],
		phase: st.GetPhase(), message: st.GetMessage(), agent: st.GetAgent()}
}

// lastView is the view of node ref the cache last showed, as far as it
// keeps it: whole while the node is being deleted, else its metadata and
// spec and its status' phase, message and agent.
func (c *cache) lastView(ref state.Ref, s shown) *sanbootv1.Node {
	if enc, ok := c.deleting[ref]; ok {
		n := &sanbootv1.Node{}
		if err := proto.Unmarshal(enc, n); err == nil {
			return n
		}
	}
	n := view.NodeOf(ref, s.node)
	n.Status = &sanbootv1.NodeStatus{Phase: s.phase, Message: s.message, Agent: s.agent}
	return n
}

// catchUp waits until the cache has seen revision minRev, or, when it is 0,
// what etcd held when it was called, so that a watch that starts after a
// write (or a read) sees it in its initial events: read-your-writes, on
// any member, however far behind its cache is. Only ctx bounds the wait:
// a cache that cannot catch up makes the watch late, never wrong.
func (c *cache) catchUp(ctx context.Context, minRev int64) error {
	if minRev > 0 && c.revision() >= minRev {
		return nil
	}
	// Any read answers with etcd's revision; one of a single key costs
	// least (counting the prefix's keys walks all of them).
	resp, err := c.cli.Get(ctx, api.Prefix)
	if err != nil {
		return etcdError(ctx, "read", err)
	}
	want := resp.Header.Revision
	if minRev > want {
		return status.Errorf(codes.OutOfRange, "min_revision %d is ahead of etcd (at %d): pass the revision of a write this cluster made", minRev, want)
	}
	if minRev > 0 {
		want = minRev
	}
	c.mu.Lock()
	c.waiting++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
	}()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.stopped:
			cancel()
		case <-wctx.Done():
		}
	}()
	err = c.inf.WaitRevision(wctx, want)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return status.Errorf(status.FromContextError(ctx.Err()).Code(),
			"this member's cache is at revision %d, behind the %d asked for: try another member or a longer timeout", c.revision(), want)
	}
	return errStopping
}

// has says whether the cache holds a view of node ref.
func (c *cache) has(ref state.Ref) bool {
	c.lock()
	defer c.unlock()
	_, ok := c.views[ref]
	return ok
}

func (c *cache) revision() int64 { return c.inf.Revision() }

// offer queues the event that turns old into cur, as this subscriber sees
// it, or reports false (and marks the subscriber dropped) if its buffer is
// full.
func (s *subscriber) offer(old, cur *sanbootv1.Node, rev int64) bool {
	was := old != nil && s.filter.Matches(old)
	is := cur != nil && s.filter.Matches(cur)
	ev := &sanbootv1.NodeEvent{Revision: rev, Node: cur}
	switch {
	case was && is:
		ev.Type = sanbootv1.NodeEvent_TYPE_MODIFIED
	case is:
		ev.Type = sanbootv1.NodeEvent_TYPE_ADDED
	case was:
		ev.Type = sanbootv1.NodeEvent_TYPE_DELETED
		if cur == nil {
			ev.Node = old
		}
	default:
		return true
	}
	select {
	case s.events <- ev:
		return true
	default:
		close(s.dropped)
		return false
	}
}

// subscribe waits for the cache to be synced and caught up (to minRev; see
// catchUp), then returns the nodes f
// selects and a subscriber that receives every later change, atomically.
func (c *cache) subscribe(ctx context.Context, f view.NodeFilter, minRev int64) (*subscriber, []*sanbootv1.Node, int64, error) {
	if err := c.waitSynced(ctx); err != nil {
		return nil, nil, 0, err
	}
	if err := c.catchUp(ctx, minRev); err != nil {
		return nil, nil, 0, err
	}
	c.lock()
	defer c.unlock()
	if c.closed {
		return nil, nil, 0, errStopping
	}
	snapshot := c.list(f)
	sub := &subscriber{filter: f, events: make(chan *sanbootv1.NodeEvent, c.buffer), dropped: make(chan struct{})}
	c.subs[sub] = struct{}{}
	return sub, snapshot, c.store.Revision, nil
}

// list returns the views of the nodes f selects, sorted, computed now
// (the caller holds lock).
func (c *cache) list(f view.NodeFilter) []*sanbootv1.Node { return view.Nodes(c.store, f) }

func (c *cache) unsubscribe(sub *subscriber) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.subs, sub)
}

// waitSynced waits for the cache's first update.
func (c *cache) waitSynced(ctx context.Context) error {
	select {
	case <-c.synced:
		return nil
	case <-c.stopped:
		return errStopping
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

var errStopping = status.Error(codes.Unavailable, "this API server is stopping: watch again (on another member)")

// WatchNodes sends the nodes a request selects (TYPE_INITIAL each, then
// TYPE_SYNCED), then every change of their views.
func (s *Server) WatchNodes(req *sanbootv1.WatchNodesRequest, stream sanbootv1.Sanboot_WatchNodesServer) error {
	f, err := nodeFilter(req.GetProject(), req.GetAllProjects(), req.GetLabelSelector(), req.GetNames())
	if err != nil {
		return err
	}
	ctx := stream.Context()
	sub, snapshot, rev, err := s.cache.subscribe(ctx, f, req.GetMinRevision())
	if err != nil {
		return err
	}
	defer s.cache.unsubscribe(sub)
	for _, n := range snapshot {
		if err := stream.Send(&sanbootv1.NodeEvent{Type: sanbootv1.NodeEvent_TYPE_INITIAL, Node: n, Revision: rev}); err != nil {
			return err
		}
	}
	if err := stream.Send(&sanbootv1.NodeEvent{Type: sanbootv1.NodeEvent_TYPE_SYNCED, Revision: rev}); err != nil {
		return err
	}
	for {
		select {
		case ev := <-sub.events:
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-sub.dropped:
			return status.Errorf(codes.ResourceExhausted, "this watch fell more than %d events behind: watch again", cap(sub.events))
		case <-s.cache.stopped:
			return errStopping
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

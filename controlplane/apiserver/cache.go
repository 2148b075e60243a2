package apiserver

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
	"github.com/sanboot/sanboot/internal/kv"
)

// cache keeps the joined view of every node, fed by one kv.Reflect over
// api.Prefix (one etcd watch, so the view is consistent at each revision),
// and fans out the views that actually changed to the WatchNodes streams.
type cache struct {
	cli    *clientv3.Client
	log    *slog.Logger
	buffer int

	synced  chan struct{} // closed after the first list
	stopped chan struct{} // closed when run returns

	mu    sync.Mutex
	store *state.Store
	views map[state.Ref]*sanbootv1.Node
	subs  map[*subscriber]struct{}
	// images and agents are the other views, for WatchImages and WatchAgents.
	images *viewSet[state.Ref, *sanbootv1.Image]
	agents *viewSet[string, *sanbootv1.Agent]
	closed bool
	// advanced is closed (and replaced) whenever the store's revision moves.
	advanced chan struct{}
	// onChange, if set, sees every node view that changed (old or cur nil
	// when the node appeared or went), under mu.
	onChange func(old, cur *sanbootv1.Node)
	// waiting counts the watches waiting in catchUp for the cache to
	// reach their revision.
	waiting int

	// hold, if set, runs before each batch is applied, outside mu: tests
	// block in it to hold the cache back.
	hold func()
}

// progressEvery is how often a watch waiting for the cache asks etcd to
// report progress, in case the revision it waits for was a write outside
// api.Prefix (no event would ever bring the cache there).
const progressEvery = time.Second

// subscriber is one WatchNodes stream.
type subscriber struct {
	filter view.NodeFilter
	events chan *sanbootv1.NodeEvent
	// dropped is closed when events overflowed; the stream then ends.
	dropped chan struct{}
}

func newCache(cli *clientv3.Client, log *slog.Logger, buffer int) *cache {
	c := &cache{
		cli:     cli,
		log:     log.With("cache", "nodes"),
		buffer:  buffer,
		synced:  make(chan struct{}),
		stopped: make(chan struct{}),
		store: state.New(log, state.Nodes, state.Placements, state.NodeStatus, state.Alive, state.Agents,
			state.Images, state.Replicas, state.Assign, state.MACs),
		views:    map[state.Ref]*sanbootv1.Node{},
		subs:     map[*subscriber]struct{}{},
		advanced: make(chan struct{}),
	}
	c.images = newViewSet("image", compareRefs, func() map[state.Ref]*sanbootv1.Image { return imageViews(c.store) })
	c.agents = newViewSet("agent", strings.Compare, func() map[string]*sanbootv1.Agent { return agentViews(c.store) })
	return c
}

func (c *cache) run(ctx context.Context) error {
	defer func() {
		c.mu.Lock()
		c.closed = true
		c.subs = map[*subscriber]struct{}{}
		c.images.subs = map[*objWatch[*sanbootv1.Image]]struct{}{}
		c.agents.subs = map[*objWatch[*sanbootv1.Agent]]struct{}{}
		c.mu.Unlock()
		close(c.stopped)
	}()
	return kv.Reflect(ctx, c.cli, api.Prefix, c.log, c.handle)
}

// handle applies a batch and sends what changed to the subscribers. It
// never blocks on a subscriber.
func (c *cache) handle(b kv.Batch) {
	if c.hold != nil {
		c.hold()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changes := c.store.Apply(b)
	affected := map[state.Ref]bool{}
	if b.Resync {
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
	for _, ref := range refs {
		old, cur := c.views[ref], view.Node(c.store, ref)
		switch {
		case cur == nil && old == nil:
			continue
		case cur == nil:
			delete(c.views, ref)
		case old != nil && proto.Equal(old, cur):
			continue
		default:
			c.views[ref] = cur
		}
		if c.onChange != nil && !b.Resync {
			c.onChange(old, cur)
		}
		for sub := range c.subs {
			if !sub.offer(old, cur, c.store.Revision) {
				delete(c.subs, sub)
				c.log.Warn("a node watcher fell behind; ending its stream so that it watches again", "buffer", c.buffer)
			}
		}
	}
	c.refreshObjects(changes, b.Resync)
	select {
	case <-c.synced:
	default:
		close(c.synced)
	}
	close(c.advanced)
	c.advanced = make(chan struct{})
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
	resp, err := c.cli.Get(ctx, api.Prefix, clientv3.WithCountOnly())
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
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for {
		c.mu.Lock()
		rev, advanced := c.store.Revision, c.advanced
		c.mu.Unlock()
		if rev >= want {
			return nil
		}
		select {
		case <-advanced:
		case <-tick.C:
			c.log.Debug("watch waits for the cache", "cache", rev, "want", want)
			if err := kv.RequestProgress(ctx, c.cli); err != nil && ctx.Err() == nil {
				c.log.Debug("progress request failed", "err", err)
			}
		case <-c.stopped:
			return errStopping
		case <-ctx.Done():
			return status.Errorf(status.FromContextError(ctx.Err()).Code(),
				"this member's cache is at revision %d, behind the %d asked for: try another member or a longer timeout", rev, want)
		}
	}
}

// has says whether the cache holds a view of node ref.
func (c *cache) has(ref state.Ref) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.views[ref]
	return ok
}

func (c *cache) revision() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.store.Revision
}

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
	select {
	case <-c.synced:
	case <-c.stopped:
		return nil, nil, 0, errStopping
	case <-ctx.Done():
		return nil, nil, 0, status.FromContextError(ctx.Err()).Err()
	}
	if err := c.catchUp(ctx, minRev); err != nil {
		return nil, nil, 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, 0, errStopping
	}
	var snapshot []*sanbootv1.Node
	for _, ref := range slices.SortedFunc(maps.Keys(c.views), func(a, b state.Ref) int {
		return cmp.Or(strings.Compare(a.Project, b.Project), strings.Compare(a.Name, b.Name))
	}) {
		if n := c.views[ref]; f.Matches(n) {
			snapshot = append(snapshot, n)
		}
	}
	sub := &subscriber{filter: f, events: make(chan *sanbootv1.NodeEvent, c.buffer), dropped: make(chan struct{})}
	c.subs[sub] = struct{}{}
	return sub, snapshot, c.store.Revision, nil
}

func (c *cache) unsubscribe(sub *subscriber) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.subs, sub)
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

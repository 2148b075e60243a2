package apiserver

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
)

// The cache keeps, besides the node views, the views of images (record,
// replicas, users) and of agents (record, liveness, node count), and fans
// their changes out to WatchImages and WatchAgents streams. Both are
// recomputed as a whole when a batch touches what they join: there are few
// images and agents, and a view that did not change sends nothing.

// objEvent is one change of an image's or agent's view.
type objEvent[T any] struct {
	typ sanbootv1.NodeEvent_Type
	obj T
	rev int64
}

// objWatch is one WatchImages or WatchAgents stream.
type objWatch[T proto.Message] struct {
	match   func(T) bool
	events  chan objEvent[T]
	dropped chan struct{} // closed when events overflowed
}

func (w *objWatch[T]) offer(old, cur T, hadOld, hasCur bool, rev int64) bool {
	was := hadOld && w.match(old)
	is := hasCur && w.match(cur)
	ev := objEvent[T]{obj: cur, rev: rev}
	switch {
	case was && is:
		ev.typ = sanbootv1.NodeEvent_TYPE_MODIFIED
	case is:
		ev.typ = sanbootv1.NodeEvent_TYPE_ADDED
	case was:
		ev.typ = sanbootv1.NodeEvent_TYPE_DELETED
		if !hasCur {
			ev.obj = old
		}
	default:
		return true
	}
	select {
	case w.events <- ev:
		return true
	default:
		close(w.dropped)
		return false
	}
}

// viewSet is the views of one kind, keyed, with their watchers. The views
// join every node (an image's users, an agent's node count), so they are
// computed only while someone watches them: without watchers, a batch
// marks them stale, and the next watcher computes them afresh. Creating
// thousands of nodes then costs no join of all nodes per batch.
type viewSet[K comparable, T proto.Message] struct {
	what    string
	compare func(a, b K) int
	compute func() map[K]T // the current views, from the cache's store
	views   map[K]T
	stale   bool // views are out of date (no watcher needed them)
	subs    map[*objWatch[T]]struct{}
}

func newViewSet[K comparable, T proto.Message](what string, compare func(a, b K) int, compute func() map[K]T) *viewSet[K, T] {
	return &viewSet[K, T]{what: what, compare: compare, compute: compute, views: map[K]T{}, subs: map[*objWatch[T]]struct{}{}}
}

// refresh brings the views up to date after a batch that may have
// changed them, and offers the changes to the watchers; with no watchers
// it only marks them stale.
func (v *viewSet[K, T]) refresh(c *cache, rev int64) {
	if len(v.subs) == 0 {
		v.views, v.stale = nil, true
		return
	}
	v.update(c, v.compute(), rev)
}

// update replaces the views with next and offers every change, in key
// order, to the watchers; a watcher that fell behind is dropped.
func (v *viewSet[K, T]) update(c *cache, next map[K]T, rev int64) {
	keys := map[K]bool{}
	for k := range v.views {
		keys[k] = true
	}
	for k := range next {
		keys[k] = true
	}
	for _, k := range slices.SortedFunc(maps.Keys(keys), v.compare) {
		old, hadOld := v.views[k]
		cur, hasCur := next[k]
		if hadOld && hasCur && proto.Equal(old, cur) {
			continue
		}
		for sub := range v.subs {
			if !sub.offer(old, cur, hadOld, hasCur, rev) {
				delete(v.subs, sub)
				c.log.Warn("a "+v.what+" watcher fell behind; ending its stream so that it watches again", "buffer", c.buffer)
			}
		}
	}
	v.views = next
}

// snapshot returns the views match selects, in key order, and a watcher
// of every later change. The cache's mu must be held.
func (v *viewSet[K, T]) subscribe(match func(T) bool, buffer int) (*objWatch[T], []T) {
	if v.stale {
		v.views, v.stale = v.compute(), false
	}
	var out []T
	for _, k := range slices.SortedFunc(maps.Keys(v.views), v.compare) {
		if o := v.views[k]; match(o) {
			out = append(out, o)
		}
	}
	w := &objWatch[T]{match: match, events: make(chan objEvent[T], buffer), dropped: make(chan struct{})}
	v.subs[w] = struct{}{}
	return w, out
}

func compareRefs(a, b state.Ref) int {
	return cmp.Or(strings.Compare(a.Project, b.Project), strings.Compare(a.Name, b.Name))
}

// imageViews computes the view of every image in the store.
func imageViews(st *state.Store) map[state.Ref]*sanbootv1.Image {
	used := view.UsedBy(st)
	out := make(map[state.Ref]*sanbootv1.Image, len(st.Images))
	for ref := range st.Images {
		out[ref] = view.Image(st, ref, used[ref])
	}
	return out
}

// agentViews computes the view of every agent in the store.
func agentViews(st *state.Store) map[string]*sanbootv1.Agent {
	out := map[string]*sanbootv1.Agent{}
	for _, a := range view.Agents(st) {
		out[a.GetRecord().GetName()] = a
	}
	return out
}

// refreshObjects recomputes the image and agent views that changes (or a
// resync) may have touched and fans out what changed. mu must be held.
func (c *cache) refreshObjects(changes []state.Change, resync bool) {
	images, agents := resync, resync
	for _, ch := range changes {
		switch ch.Kind {
		case state.Images, state.Replicas, state.Nodes:
			images = true
		case state.Agents, state.Alive:
			images, agents = true, true // an image's phase counts the live agents
		case state.Assign:
			agents = true
		}
	}
	if images {
		c.images.refresh(c, c.store.Revision)
	}
	if agents {
		c.agents.refresh(c, c.store.Revision)
	}
}

// subscribeObjects waits like subscribe, then calls sub under mu.
func (c *cache) subscribeObjects(ctx context.Context, minRev int64, sub func()) (int64, error) {
	if err := c.waitSynced(ctx); err != nil {
		return 0, err
	}
	if err := c.catchUp(ctx, minRev); err != nil {
		return 0, err
	}
	c.lock()
	defer c.unlock()
	if c.closed {
		return 0, errStopping
	}
	sub()
	return c.store.Revision, nil
}

// serveWatch sends the initial views, TYPE_SYNCED, then w's events, until
// the stream ends, the watcher falls behind or the cache stops.
func serveWatch[T proto.Message, E any](ctx context.Context, c *cache, w *objWatch[T], initial []T, rev int64,
	send func(*E) error, mk func(sanbootv1.NodeEvent_Type, T, int64) *E) error {
	var zero T
	for _, o := range initial {
		if err := send(mk(sanbootv1.NodeEvent_TYPE_INITIAL, o, rev)); err != nil {
			return err
		}
	}
	if err := send(mk(sanbootv1.NodeEvent_TYPE_SYNCED, zero, rev)); err != nil {
		return err
	}
	for {
		select {
		case ev := <-w.events:
			if err := send(mk(ev.typ, ev.obj, ev.rev)); err != nil {
				return err
			}
		case <-w.dropped:
			return status.Errorf(codes.ResourceExhausted, "this watch fell more than %d events behind: watch again", cap(w.events))
		case <-c.stopped:
			return errStopping
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// WatchImages sends the images a request selects (TYPE_INITIAL each, then
// TYPE_SYNCED), then every change of their views: spec, replicas, phase,
// users.
func (s *Server) WatchImages(req *sanbootv1.WatchImagesRequest, stream grpc.ServerStreamingServer[sanbootv1.ImageEvent]) error {
	f, err := nodeFilter(req.GetProject(), req.GetAllProjects(), req.GetLabelSelector(), req.GetNames())
	if err != nil {
		return err
	}
	match := func(im *sanbootv1.Image) bool {
		return f.Matches(&sanbootv1.Node{Metadata: im.GetMetadata()})
	}
	ctx := stream.Context()
	var w *objWatch[*sanbootv1.Image]
	var initial []*sanbootv1.Image
	rev, err := s.cache.subscribeObjects(ctx, req.GetMinRevision(), func() { w, initial = s.cache.images.subscribe(match, s.cache.buffer) })
	if err != nil {
		return err
	}
	defer s.cache.unsubscribeObjects(func() { delete(s.cache.images.subs, w) })
	return serveWatch(ctx, s.cache, w, initial, rev, stream.Send, func(t sanbootv1.NodeEvent_Type, im *sanbootv1.Image, rev int64) *sanbootv1.ImageEvent {
		return &sanbootv1.ImageEvent{Type: t, Image: im, Revision: rev}
	})
}

// WatchAgents sends every agent (TYPE_INITIAL each, then TYPE_SYNCED),
// then every change of their views: record, state, node count.
func (s *Server) WatchAgents(_ *sanbootv1.ListAgentsRequest, stream grpc.ServerStreamingServer[sanbootv1.AgentEvent]) error {
	ctx := stream.Context()
	var w *objWatch[*sanbootv1.Agent]
	var initial []*sanbootv1.Agent
	all := func(*sanbootv1.Agent) bool { return true }
	rev, err := s.cache.subscribeObjects(ctx, 0, func() { w, initial = s.cache.agents.subscribe(all, s.cache.buffer) })
	if err != nil {
		return err
	}
	defer s.cache.unsubscribeObjects(func() { delete(s.cache.agents.subs, w) })
	return serveWatch(ctx, s.cache, w, initial, rev, stream.Send, func(t sanbootv1.NodeEvent_Type, a *sanbootv1.Agent, rev int64) *sanbootv1.AgentEvent {
		return &sanbootv1.AgentEvent{Type: t, Agent: a, Revision: rev}
	})
}

func (c *cache) unsubscribeObjects(drop func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	drop()
}

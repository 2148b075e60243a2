// Package informer is a control-plane member's one watch of sanboot's
// records: one kv.Reflect over api.Prefix feeds one decoded state.Store,
// which every consumer of the member reads (the API server's watch cache,
// the boot server, the scheduler while this member leads), in the manner
// of a Kubernetes shared informer.
//
// Consumers read the store under RLock and learn of changes through a
// handler (AddHandler) that the informer calls after each batch, with the
// store at the batch's revision. WaitRevision waits until the store has
// seen a revision: read-your-writes for the API's watches, and a new
// leader's scheduler planning from the store at once instead of reading
// everything again.
package informer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/kv"
)

// Update is what a handler is told after a batch.
type Update struct {
	// Store is the informer's store at the batch's revision; read it
	// during the call only, and never change it.
	Store *state.Store
	// Changes are the records that changed, in order.
	Changes []state.Change
	// Resync says anything may have changed: a (re)list, or the first
	// update a handler added after the first list receives.
	Resync bool
}

// Handler is told of every batch, in order, from one goroutine, while the
// informer holds its lock: it must not block, nor call RLock.
type Handler func(Update)

// ErrStopped is returned by waits when the informer's Run has returned.
var ErrStopped = errors.New("the member's watch of etcd has stopped")

// progressEvery is how often WaitRevision asks etcd to report progress, in
// case the revision it waits for was a write outside api.Prefix (no event
// would ever bring the store there).
const progressEvery = time.Second

// Informer is one watch of api.Prefix and the store it feeds. Create it
// with New, add handlers, and call Run once.
type Informer struct {
	cli *clientv3.Client
	log *slog.Logger

	synced  chan struct{} // closed after the first list
	stopped chan struct{} // closed when Run returns

	mu       sync.RWMutex
	store    *state.Store
	handlers map[*Handler]struct{}
	// advanced is closed (and replaced) whenever the store's revision moves.
	advanced chan struct{}

	// paused, when not nil, holds batches back until it is closed (Pause).
	pauseMu sync.Mutex
	paused  chan struct{}
}

// New returns an informer over cli.
func New(cli *clientv3.Client, log *slog.Logger) *Informer {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "informer")
	return &Informer{
		cli:     cli,
		log:     log,
		synced:  make(chan struct{}),
		stopped: make(chan struct{}),
		// What the consumers read. Secrets are for the scheduler
		// (assignments) and the boot server (CHAP in scripts); the API's
		// views never show them.
		store: state.New(log, state.Nodes, state.Placements, state.NodeStatus, state.Assign, state.Agents, state.Alive,
			state.Images, state.Replicas, state.Secrets, state.MACs),
		handlers: map[*Handler]struct{}{},
		advanced: make(chan struct{}),
	}
}

// Run watches etcd and feeds the store and the handlers until ctx ends.
func (i *Informer) Run(ctx context.Context) error {
	defer close(i.stopped)
	return kv.Reflect(ctx, i.cli, api.Prefix, i.log, i.apply)
}

func (i *Informer) apply(b kv.Batch) {
	i.pauseMu.Lock()
	p := i.paused
	i.pauseMu.Unlock()
	if p != nil {
		<-p
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	u := Update{Store: i.store, Changes: i.store.Apply(b), Resync: b.Resync}
	for h := range i.handlers {
		(*h)(u)
	}
	select {
	case <-i.synced:
	default:
		close(i.synced)
	}
	close(i.advanced)
	i.advanced = make(chan struct{})
}

// AddHandler adds h and returns the function that removes it. Once the
// first list has arrived, h is first given a Resync update of the store
// as it is, so that it starts from everything the informer holds.
func (i *Informer) AddHandler(h Handler) (remove func()) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.handlers[&h] = struct{}{}
	select {
	case <-i.synced:
		h(Update{Store: i.store, Resync: true})
	default:
	}
	return func() {
		i.mu.Lock()
		defer i.mu.Unlock()
		delete(i.handlers, &h)
	}
}

// RLock locks the store for reading and returns it; call RUnlock when
// done. Handlers run under the write lock: a consumer that locks its own
// state in its handler takes RLock before that lock elsewhere.
func (i *Informer) RLock() *state.Store {
	i.mu.RLock()
	return i.store
}

// RUnlock undoes RLock.
func (i *Informer) RUnlock() { i.mu.RUnlock() }

// Revision is the etcd revision the store is consistent with.
func (i *Informer) Revision() int64 {
	defer i.RUnlock()
	return i.RLock().Revision
}

// Stopped is closed when Run has returned.
func (i *Informer) Stopped() <-chan struct{} { return i.stopped }

// WaitSynced waits for the first list.
func (i *Informer) WaitSynced(ctx context.Context) error {
	select {
	case <-i.synced:
		return nil
	case <-i.stopped:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitRevision waits until the store has seen revision rev (and the
// handlers with it). Only ctx bounds the wait; it returns ctx's error, or
// ErrStopped.
func (i *Informer) WaitRevision(ctx context.Context, rev int64) error {
	var tick *time.Ticker
	for {
		i.mu.RLock()
		cur, advanced := i.store.Revision, i.advanced
		i.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		if tick == nil {
			tick = time.NewTicker(progressEvery)
			defer tick.Stop()
		}
		select {
		case <-advanced:
		case <-tick.C:
			i.log.Debug("waiting for the watch to reach a revision", "at", cur, "want", rev)
			if err := kv.RequestProgress(ctx, i.cli); err != nil && ctx.Err() == nil {
				i.log.Debug("progress request failed", "err", err)
			}
		case <-i.stopped:
			return ErrStopped
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Pause holds back the batches the watch delivers from now on (one being
// applied finishes), as when the member's watch is slow or cut off;
// Resume lets them through. For tests of read-your-writes.
func (i *Informer) Pause() {
	i.pauseMu.Lock()
	defer i.pauseMu.Unlock()
	if i.paused == nil {
		i.paused = make(chan struct{})
	}
}

// Resume lets held batches through.
func (i *Informer) Resume() {
	i.pauseMu.Lock()
	defer i.pauseMu.Unlock()
	if i.paused != nil {
		close(i.paused)
		i.paused = nil
	}
}

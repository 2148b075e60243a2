// Package registry keeps an agent registered in etcd: its AgentRecord at
// api.AgentKey (no lease: it outlives the agent, so that a dead agent shows
// as Unavailable, not as unknown) and an empty key at api.AliveKey under a
// lease kept alive. The agent is Ready while the alive key exists.
//
// If the lease is lost (etcd was down or the agent cut off for longer than
// the TTL) the registry grants a new one and registers again by itself.
// Run revokes the lease when it returns, so a stopped agent shows as
// Unavailable at once instead of after the TTL.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
)

// Config describes the agent to register.
type Config struct {
	Name             string
	Version          string
	Driver           string
	Portals          []string
	AdvertisePortals []string
	CloneMode        string
	// StoreKind is where the agent's disks live (file, rbd, fake) and
	// StorageDomain, for a shared store, what identifies it (see
	// AgentRecord.storage_domain).
	StoreKind, StorageDomain string
	// TTL of the lease on the alive key (default 10 s; etcd rounds up to
	// its minimum, about 2 s).
	TTL time.Duration
	// Capacity reports the store's size and free bytes; it is read at
	// registration and every UpdateInterval, and the record is rewritten
	// only when they changed. Nil means 0 and 0.
	Capacity func(context.Context) (capacity, free int64, err error)
	// OnLost, when set, is called as soon as the lease is lost (before
	// the registry registers again), and OnRegistered after every
	// registration: an agent with a shared store fences itself between
	// the two.
	OnLost, OnRegistered func()
	// UpdateInterval between capacity checks (default 30 s).
	UpdateInterval time.Duration
	Log            *slog.Logger
}

// Registry is one agent's registration.
type Registry struct {
	cli   *clientv3.Client
	cfg   Config
	log   *slog.Logger
	start time.Time

	ready     chan struct{}
	readyOnce sync.Once

	mu     sync.Mutex
	lease  clientv3.LeaseID
	prev   clientv3.LeaseID       // the lease of the previous session, if it was lost
	record *sanbootv1.AgentRecord // last written, nil before the first write
	recRev int64                  // its mod_revision
}

// New returns a registry; call Run.
func New(cli *clientv3.Client, cfg Config) (*Registry, error) {
	if err := api.ValidateName("agent name", cfg.Name); err != nil {
		return nil, err
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.UpdateInterval <= 0 {
		cfg.UpdateInterval = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Registry{cli: cli, cfg: cfg, log: cfg.Log.With("component", "registry"), start: time.Now(), ready: make(chan struct{})}, nil
}

// Ready is closed once the agent has registered for the first time.
func (r *Registry) Ready() <-chan struct{} { return r.ready }

// Lease is the current lease, 0 while unregistered.
func (r *Registry) Lease() clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// Run registers the agent and keeps it registered until ctx ends, then
// revokes the lease. It retries every failure with backoff and returns
// only when ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	defer r.revoke()
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := r.session(ctx)
		if ctx.Err() != nil {
			break
		}
		r.log.Warn("registration lost; registering again", "agent", r.cfg.Name, "err", err, "in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, 5*time.Second)
	}
	return ctx.Err()
}

// session grants a lease, registers under it, and keeps it alive until the
// lease is lost or ctx ends.
func (r *Registry) session(ctx context.Context) error {
	ttl := max(int64(r.cfg.TTL.Round(time.Second)/time.Second), 1)
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	g, err := r.cli.Grant(gctx, ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("grant a lease of %d s: %w; is etcd reachable?", ttl, err)
	}
	// The keepalive context is not ctx: Run revokes the lease itself and
	// keepalives must not stop a moment before that.
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	ch, err := r.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		return fmt.Errorf("keep lease %x alive: %w", g.ID, err)
	}
	if err := r.register(ctx, g.ID); err != nil {
		r.revokeLease(g.ID, false)
		return err
	}
	r.mu.Lock()
	r.lease = g.ID
	r.mu.Unlock()
	r.readyOnce.Do(func() { close(r.ready) })
	r.log.Info("registered", "agent", r.cfg.Name, "lease", fmt.Sprintf("%x", g.ID), "ttl", ttl)
	if r.cfg.OnRegistered != nil {
		r.cfg.OnRegistered()
	}

	tick := time.NewTicker(r.cfg.UpdateInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-ch:
			if !ok {
				r.mu.Lock()
				r.lease, r.prev = 0, g.ID
				r.mu.Unlock()
				if r.cfg.OnLost != nil {
					r.cfg.OnLost()
				}
				return fmt.Errorf("lease %x expired or could not be kept alive", g.ID)
			}
		case <-tick.C:
			if err := r.updateRecord(ctx); err != nil {
				r.log.Warn("could not update the agent record; retrying at the next interval", "err", err)
			}
		}
	}
}

// register writes the record and the alive key (under lease) in one
// transaction that compares the record's mod_revision.
func (r *Registry) register(ctx context.Context, lease clientv3.LeaseID) error {
	alive := api.AliveKey(r.cfg.Name)
	r.mu.Lock()
	prev := r.prev
	r.mu.Unlock()
	if resp, err := r.cli.Get(ctx, alive); err == nil && len(resp.Kvs) > 0 && resp.Kvs[0].Lease == int64(prev) && prev != 0 {
		// Our own lost lease survived on the server (etcd restarted and
		// renewed it): take the key over and let that lease go.
		defer r.revokeLease(prev, false)
	} else if err == nil && len(resp.Kvs) > 0 && resp.Kvs[0].Lease != int64(lease) {
		r.log.Warn("the alive key is held by another lease: a previous run of this agent that did not stop cleanly, "+
			"or another agent with the same --name (names must be unique); taking it over",
			"key", alive, "lease", fmt.Sprintf("%x", resp.Kvs[0].Lease))
	}
	for attempt := 0; ; attempt++ {
		rec, err := r.buildRecord(ctx)
		if err != nil {
			return err
		}
		var cur sanbootv1.AgentRecord
		rev, err := kv.Get(ctx, r.cli, api.AgentKey(r.cfg.Name), &cur)
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		put, err := kv.PutOp(api.AgentKey(r.cfg.Name), rec)
		if err != nil {
			return err
		}
		resp, err := r.cli.Txn(ctx).If(kv.Unchanged(api.AgentKey(r.cfg.Name), rev)).
			Then(put, clientv3.OpPut(alive, "", clientv3.WithLease(lease))).Commit()
		if err != nil {
			return fmt.Errorf("register agent %s: %w", r.cfg.Name, err)
		}
		if resp.Succeeded {
			r.mu.Lock()
			r.record, r.recRev = rec, resp.Header.Revision
			r.mu.Unlock()
			return nil
		}
		if attempt >= 5 {
			return fmt.Errorf("register agent %s: %w", r.cfg.Name, kv.ErrConflict)
		}
	}
}

func (r *Registry) buildRecord(ctx context.Context) (*sanbootv1.AgentRecord, error) {
	rec := &sanbootv1.AgentRecord{
		Name:             r.cfg.Name,
		Version:          r.cfg.Version,
		Driver:           r.cfg.Driver,
		Portals:          slices.Clone(r.cfg.Portals),
		AdvertisePortals: slices.Clone(r.cfg.AdvertisePortals),
		CloneMode:        r.cfg.CloneMode,
		StoreKind:        r.cfg.StoreKind,
		StorageDomain:    r.cfg.StorageDomain,
		StartTime:        timestamppb.New(r.start),
		UpdateTime:       timestamppb.Now(),
	}
	if r.cfg.Capacity != nil {
		c, f, err := r.cfg.Capacity(ctx)
		if err != nil {
			return nil, fmt.Errorf("read the store's capacity: %w", err)
		}
		rec.CapacityBytes, rec.FreeBytes = c, f
	}
	return rec, nil
}

// updateRecord rewrites the record if the capacity or free space changed.
func (r *Registry) updateRecord(ctx context.Context) error {
	rec, err := r.buildRecord(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	old, rev := r.record, r.recRev
	r.mu.Unlock()
	if old != nil && old.CapacityBytes == rec.CapacityBytes && old.FreeBytes == rec.FreeBytes {
		return nil
	}
	newRev, err := kv.CAS(ctx, r.cli, api.AgentKey(r.cfg.Name), rev, rec)
	if errors.Is(err, kv.ErrConflict) {
		// Someone else wrote the record: read it and try again next time.
		var cur sanbootv1.AgentRecord
		if rev, gerr := kv.Get(ctx, r.cli, api.AgentKey(r.cfg.Name), &cur); gerr == nil {
			r.mu.Lock()
			r.record, r.recRev = &cur, rev
			r.mu.Unlock()
		}
		return err
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.record, r.recRev = rec, newRev
	r.mu.Unlock()
	r.log.Info("agent record updated", "capacity", rec.CapacityBytes, "free", rec.FreeBytes)
	return nil
}

func (r *Registry) revoke() {
	r.mu.Lock()
	id := r.lease
	r.lease = 0
	r.mu.Unlock()
	if id != 0 {
		r.revokeLease(id, true)
	}
}

// revokeLease ends a lease; final says it is the agent's last one, whose
// end makes the agent Unavailable.
func (r *Registry) revokeLease(id clientv3.LeaseID, final bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := r.cli.Revoke(ctx, id)
	switch {
	case !final:
		r.log.Debug("old lease revoked", "lease", fmt.Sprintf("%x", id), "err", err)
	case err != nil:
		r.log.Warn("could not revoke the lease; the agent shows as Unavailable when it expires", "lease", fmt.Sprintf("%x", id), "err", err)
	default:
		r.log.Info("lease revoked; the agent shows as Unavailable", "agent", r.cfg.Name)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

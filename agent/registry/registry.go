// Package registry keeps an agent registered in etcd: its AgentRecord at
// api.AgentKey (no lease: it outlives the agent, so that a dead agent shows
// as Unavailable, not as unknown) and an empty key at api.AliveKey under a
// lease kept alive. The agent is Ready while the alive key exists.
//
// The lease is kept by package lease, as a control-plane member's is: if it
// is lost (etcd was down or the agent cut off for longer than the TTL) a
// new one is granted and the agent registers again by itself. Run revokes the lease when it returns, so a stopped agent shows as
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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
	"github.com/sanboot/sanboot/internal/lease"
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
	// TargetsOutlive says the agent's targets keep being served when it
	// stops (a system tgtd, LIO): a graceful stop then records that in the
	// agent record, and its nodes stay Ready instead of Unavailable.
	TargetsOutlive bool
	// OnLost, when set, is called as soon as the lease is lost (before
	// the registry registers again), and OnRegistered after every
	// registration: an agent with a shared store fences itself between
	// the two.
	OnLost, OnRegistered func()
	// UpdateInterval between capacity checks (default 10 s; at once when SetProblem changes the problem, e.g. when the store fills up).
	UpdateInterval time.Duration
	Log            *slog.Logger
}

// Registry is one agent's registration.
type Registry struct {
	cli   *clientv3.Client
	cfg   Config
	log   *slog.Logger
	start time.Time
	keep  *lease.Keeper

	mu      sync.Mutex
	record  *sanbootv1.AgentRecord // last written, nil before the first write
	recRev  int64                  // its mod_revision
	problem string                 // AgentRecord.problem
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
		cfg.UpdateInterval = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	r := &Registry{cli: cli, cfg: cfg, log: cfg.Log.With("component", "registry"), start: time.Now()}
	lc := lease.Config{
		What: "agent " + cfg.Name, TTL: cfg.TTL, Log: r.log,
		Register: r.register, Every: cfg.UpdateInterval, Tick: r.updateRecord,
		Lost: cfg.OnLost, Registered: cfg.OnRegistered,
	}
	if cfg.TargetsOutlive {
		lc.Stopping = r.recordStop
	}
	r.keep = lease.New(cli, lc)
	return r, nil
}

// Ready is closed once the agent has registered for the first time.
func (r *Registry) Ready() <-chan struct{} { return r.keep.Ready() }

// SetProblem sets why the agent does not serve its targets ("" when it
// does) and rewrites the record soon, so that `get agents` says it.
func (r *Registry) SetProblem(problem string) {
	r.mu.Lock()
	r.problem = problem
	r.mu.Unlock()
	r.keep.Poke()
}

// Lease is the current lease, 0 while unregistered.
func (r *Registry) Lease() clientv3.LeaseID { return r.keep.Lease() }

// Run registers the agent and keeps it registered until ctx ends, then
// revokes the lease, so that the agent shows as Unavailable at once. It
// retries every failure with backoff and returns only when ctx ends.
func (r *Registry) Run(ctx context.Context) error { return r.keep.Run(ctx) }

// register writes the record and the alive key (under lease) in one
// transaction that compares the record's mod_revision. prev is the lease
// of the lost previous session, if any.
func (r *Registry) register(ctx context.Context, lease, prev clientv3.LeaseID) error {
	alive := api.AliveKey(r.cfg.Name)
	if resp, err := r.cli.Get(ctx, alive); err == nil && len(resp.Kvs) > 0 && resp.Kvs[0].Lease != int64(lease) && (prev == 0 || resp.Kvs[0].Lease != int64(prev)) {
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
	r.mu.Lock()
	rec.Problem = r.problem
	r.mu.Unlock()
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
	if old != nil && old.CapacityBytes == rec.CapacityBytes && old.FreeBytes == rec.FreeBytes && old.Problem == rec.Problem {
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
	r.log.Info("agent record updated", "capacity", rec.CapacityBytes, "free", rec.FreeBytes, "problem", rec.Problem)
	return nil
}

// recordStop writes, before the lease goes, that the agent stops on
// purpose and leaves its targets serving.
func (r *Registry) recordStop() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r.mu.Lock()
	rec, rev := r.record, r.recRev
	r.mu.Unlock()
	if rec == nil {
		return
	}
	rec = proto.CloneOf(rec)
	rec.StopTime, rec.TargetsKept = timestamppb.Now(), true
	if _, err := kv.CAS(ctx, r.cli, api.AgentKey(r.cfg.Name), rev, rec); err != nil {
		r.log.Warn("could not record the stop; the agent's nodes show Unavailable until it is back", "err", err)
		return
	}
	r.log.Info("stopping with the targets left serving: the agent's nodes stay Ready (unchecked) until it is back")
}

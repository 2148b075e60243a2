// Package reconciler makes one agent's host match what etcd asks of it.
// It is level-triggered: it mirrors the agent's own assignments
// (api.AssignPrefix) and every image spec (api.ImagesPrefix) with
// kv.Reflect, queues a key for every change, and a worker then converges
// that node or image from scratch — store (image, clone), target (driver)
// and status record — whatever happened before: a restart, a reboot that
// wiped the targets, a lost event. A full resync on start and every
// ResyncInterval compares desired (etcd) with actual (store and driver),
// queues what differs and removes sanboot targets nobody wants.
//
// Status records are written by one writer that batches many records per
// etcd transaction; each record is guarded by the revision of the record
// it is about (the assignment for a NodeStatus, the image spec for an
// ImageReplica), so a stale view never overwrites a newer one.
//
// Node disks are deleted only for an assignment marked deleting; a disk
// nobody claims is logged as an orphan and kept.
package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
	"github.com/sanboot/sanboot/internal/workqueue"
)

// Config is what the reconciler works with.
type Config struct {
	// Agent is this agent's name.
	Agent  string
	Client *clientv3.Client
	Store  store.Store
	Driver target.Driver
	// Portals the targets listen on; AdvertisePortals (if any) are what the
	// status tells nodes instead.
	Portals          []string
	AdvertisePortals []string
	// Workers bounds how many nodes and images are worked on at once
	// (default 8).
	Workers int
	// ResyncInterval between full resyncs (default 1 min).
	ResyncInterval time.Duration
	// ProgressAfter is how long a node's work may take before the status
	// says Provisioning (or Deleting) while it goes on (default 200 ms).
	ProgressAfter time.Duration
	// ManagedPrefix marks the targets sanboot owns: a target whose IQN
	// starts with it and that no assignment wants is removed (default
	// api.DefaultAuthority + ":").
	ManagedPrefix string
	// SharedStore says that other agents reach the same store (agents of a
	// storage domain sharing an RBD pool): an image that this agent is not
	// asked to hold is then another agent's, and only the deletion of the
	// image record removes it from the store.
	SharedStore bool
	// RetryBase and RetryMax bound the backoff of failed work (default
	// 500 ms doubling up to 1 min).
	RetryBase, RetryMax time.Duration
	// StatusBatch is the most status records per etcd transaction
	// (default 100; etcd allows 128 operations per transaction).
	StatusBatch int
	// OnRetry, if set, is called with "node" or "image" for each key
	// queued again after failed work (a metric).
	OnRetry func(kind string)
	// TargetProblem, if set, reports a known outage of the target system
	// (a managed tgtd that died and is being started again), nil when
	// none. Call CheckTargets when it changes.
	TargetProblem func() error
	// HealthInterval between checks that the targets of Ready nodes are
	// served (default 5 s; see health.go).
	HealthInterval time.Duration
	// OnProblem, if set, is called with Problem whenever it changes.
	OnProblem func(problem string)
	// StoreFullBelow is the free space under which the store counts as
	// full: writes to the nodes' disks fail (default 16 MiB; see health.go).
	StoreFullBelow int64
	Log            *slog.Logger
}

type kind uint8

const (
	kindNode kind = iota + 1
	kindImage
)

// ref names a node or an image within a project.
type ref struct{ project, name string }

// key is a unit of work.
type key struct {
	kind kind
	ref
}

type assignState struct {
	rev int64
	a   *sanbootv1.Assignment
	err error // the record could not be decoded
}

type imageState struct {
	rev int64
	im  *sanbootv1.Image
	err error
}

// Reconciler converges one agent. Create with New, start with Run.
type Reconciler struct {
	cfg       Config
	log       *slog.Logger
	q         *workqueue.Queue[key]
	w         *writer
	advertise []string      // portals the status reports
	resyncCh  chan struct{} // asks for a full resync
	gcCh      chan struct{} // asks for a target GC
	healthCh  chan struct{} // asks for a target check
	synced    chan struct{} // closed after the first full resync
	syncOnce  sync.Once
	resyncs   atomic.Int64 // full resyncs finished
	fenced    atomic.Bool  // see Fence

	mu       sync.Mutex // guards what follows
	assigns  map[ref]assignState
	images   map[ref]imageState
	imageErr map[ref]string       // last import failure of an image
	imageOK  map[ref]int64        // image generation last reported Ready
	waiting  map[ref]map[ref]bool // image -> nodes waiting for it
	orphans  map[ref]bool         // orphan disks already logged
	deps     map[key]map[key]bool // work to queue again after a key's work (see after)
	listed   [2]bool              // assignments, images listed once

	// The target checks (health.go).
	served        map[ref]served // nodes whose last status said Ready
	lost          map[ref]bool   // nodes said Unavailable because their target vanished
	targetProblem string         // the target system's outage, "" when none
	storeFull     string         // why the store counts as full, "" when it does not
	seq           uint64
}

// New checks cfg and returns a reconciler.
func New(cfg Config) (*Reconciler, error) {
	if err := api.ValidateName("agent", cfg.Agent); err != nil {
		return nil, err
	}
	if cfg.Client == nil || cfg.Store == nil || cfg.Driver == nil {
		return nil, errors.New("reconciler: Client, Store and Driver are required")
	}
	if len(cfg.Portals) == 0 {
		return nil, errors.New("reconciler: at least one portal is required")
	}
	for i, p := range cfg.Portals {
		if err := api.ValidatePortal(fmt.Sprintf("portals[%d]", i), p); err != nil {
			return nil, err
		}
	}
	for i, p := range cfg.AdvertisePortals {
		if err := api.ValidatePortal(fmt.Sprintf("advertisePortals[%d]", i), p); err != nil {
			return nil, err
		}
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = time.Minute
	}
	if cfg.ProgressAfter <= 0 {
		cfg.ProgressAfter = 200 * time.Millisecond
	}
	if cfg.ManagedPrefix == "" {
		cfg.ManagedPrefix = api.DefaultAuthority + ":"
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 500 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 5 * time.Second
	}
	if cfg.StoreFullBelow <= 0 {
		cfg.StoreFullBelow = 16 << 20
	}
	if cfg.StatusBatch <= 0 || cfg.StatusBatch > 128 {
		cfg.StatusBatch = 100
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	log := cfg.Log.With("component", "reconciler", "agent", cfg.Agent)
	r := &Reconciler{
		cfg:      cfg,
		log:      log,
		q:        workqueue.New[key](cfg.RetryBase, cfg.RetryMax),
		w:        newWriter(cfg.Client, log, cfg.StatusBatch),
		assigns:  map[ref]assignState{},
		images:   map[ref]imageState{},
		imageErr: map[ref]string{},
		imageOK:  map[ref]int64{},
		waiting:  map[ref]map[ref]bool{},
		orphans:  map[ref]bool{},
		deps:     map[key]map[key]bool{},
		resyncCh: make(chan struct{}, 1),
		gcCh:     make(chan struct{}, 1),
		healthCh: make(chan struct{}, 1),
		served:   map[ref]served{},
		lost:     map[ref]bool{},
		synced:   make(chan struct{}),
	}
	r.advertise = slices.Clone(cfg.AdvertisePortals)
	if len(r.advertise) == 0 {
		r.advertise = slices.Clone(cfg.Portals)
	}
	return r, nil
}

// Synced is closed once the first full resync has finished.
func (r *Reconciler) Synced() <-chan struct{} { return r.synced }

// Resyncs is how many full resyncs have finished: what a test that
// asserts "nothing happened" waits on to know that time passed.
func (r *Reconciler) Resyncs() int64 { return r.resyncs.Load() }

// QueueLen is how many nodes and images wait to be worked on.
func (r *Reconciler) QueueLen() int { return r.q.Len() }

// Resync asks for a full resync now.
func (r *Reconciler) Resync() { kick(r.resyncCh) }

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run works until ctx ends, then lets the workers finish what they hold
// and writes the last status records.
func (r *Reconciler) Run(ctx context.Context) error {
	wctx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	var writerDone sync.WaitGroup
	writerDone.Go(func() { r.w.run(wctx) })

	var wg sync.WaitGroup
	wg.Go(func() {
		_ = kv.Reflect(ctx, r.cfg.Client, api.AssignPrefix(r.cfg.Agent), r.log, r.onAssignments)
	})
	wg.Go(func() {
		_ = kv.Reflect(ctx, r.cfg.Client, api.ImagesPrefix(""), r.log, r.onImages)
	})
	wg.Go(func() { r.healthLoop(ctx) })
	var workers sync.WaitGroup
	for range r.cfg.Workers {
		workers.Go(func() { r.worker(ctx) })
	}

	tick := time.NewTicker(r.cfg.ResyncInterval)
	defer tick.Stop()
	backoff := r.cfg.RetryBase
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-r.resyncCh:
		case <-tick.C:
		case <-r.gcCh:
			if !r.ready() {
				continue
			}
			if err := r.gcTargets(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("target garbage collection failed; the next resync tries again", "err", err)
			}
			continue
		}
		if !r.ready() {
			continue // the second first list asks again
		}
		if err := r.resync(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			r.log.Warn("resync failed; retrying", "err", err, "in", backoff)
			time.AfterFunc(backoff, r.Resync)
			backoff = min(backoff*2, r.cfg.RetryMax)
			continue
		}
		backoff = r.cfg.RetryBase
		r.resyncs.Add(1)
		r.syncOnce.Do(func() { close(r.synced) })
	}
	r.q.ShutDown()
	workers.Wait()
	wg.Wait()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	stopWriter()
	writerDone.Wait()
	r.w.flush(fctx)
	cancel()
	return ctx.Err()
}

// ready reports whether both prefixes have been listed: before that a
// resync would take missing records for unwanted ones.
func (r *Reconciler) ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listed[0] && r.listed[1]
}

func (r *Reconciler) onAssignments(b kv.Batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	gc := false
	for _, ev := range b.Events {
		agent, project, node, err := api.ParseAssignKey(ev.Key)
		if err != nil || agent != r.cfg.Agent {
			r.log.Warn("ignoring a key under this agent's assignments", "key", ev.Key, "err", err)
			continue
		}
		k := ref{project, node}
		if ev.Deleted {
			delete(r.assigns, k)
			r.forgetNodeLocked(k)
			r.w.forget(api.NodeStatusKey(project, node, r.cfg.Agent))
			gc = true
			continue
		}
		a := &sanbootv1.Assignment{}
		st := assignState{rev: ev.ModRevision, a: a}
		if err := proto.Unmarshal(ev.Value, a); err != nil {
			st.err = err
		}
		r.assigns[k] = st
		r.q.Add(key{kindNode, k})
	}
	if gc {
		kick(r.gcCh)
	}
	if b.Resync && !r.listed[0] {
		r.listed[0] = true
		if r.listed[1] {
			kick(r.resyncCh)
		}
	}
}

func (r *Reconciler) onImages(b kv.Batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range b.Events {
		project, name, err := api.ProjectName(ev.Key)
		if err != nil {
			r.log.Warn("ignoring a key under images", "key", ev.Key, "err", err)
			continue
		}
		k := ref{project, name}
		if ev.Deleted {
			delete(r.images, k)
		} else {
			im := &sanbootv1.Image{}
			st := imageState{rev: ev.ModRevision, im: im}
			if err := proto.Unmarshal(ev.Value, im); err != nil {
				st.err = err
			}
			r.images[k] = st
		}
		r.q.Add(key{kindImage, k})
	}
	if b.Resync && !r.listed[1] {
		r.listed[1] = true
		if r.listed[0] {
			kick(r.resyncCh)
		}
	}
}

// outcome says what to do with a key after its work.
type outcome int

const (
	// done: converged, or nothing to do.
	done outcome = iota
	// retry: failed; try again after a backoff.
	retry
	// settled: failed in a way only a new spec can fix, or waiting for an
	// image; the key is queued again when that changes.
	settled
)

func (r *Reconciler) worker(ctx context.Context) {
	for {
		// One key at a time: a slow key (a full copy, a large import)
		// must not hold others hostage while workers idle. The status
		// writer batches the etcd writes.
		keys, ok := r.q.GetBatch(1)
		if !ok {
			return
		}
		for _, k := range keys {
			if ctx.Err() != nil { // stopping: leave the rest to the next run
				r.q.Done(k)
				continue
			}
			var out outcome
			var err error
			switch k.kind {
			case kindNode:
				out, err = r.syncNode(ctx, k.ref)
			case kindImage:
				out, err = r.syncImage(ctx, k.ref)
			}
			switch out {
			case retry:
				if ctx.Err() != nil {
					break
				}
				r.log.Warn("work failed; retrying", "kind", kindName(k.kind), "project", k.project, "name", k.name,
					"retries", r.q.Retries(k), "err", err)
				if r.cfg.OnRetry != nil {
					r.cfg.OnRetry(kindName(k.kind))
				}
				r.q.AddRateLimited(k)
			case settled:
				if err != nil {
					r.log.Info("work settled without success", "kind", kindName(k.kind), "project", k.project, "name", k.name, "reason", err)
				}
				r.q.Forget(k)
			default:
				r.q.Forget(k)
			}
			r.q.Done(k)
			if out == done {
				r.wakeAfter(k)
			}
		}
	}
}

func kindName(k kind) string {
	if k == kindImage {
		return "image"
	}
	return "node"
}

// progress writes a "still working" status if work takes longer than a
// threshold, and never after the work's final status.
type progress struct {
	mu    sync.Mutex
	done  bool
	timer *time.Timer
	msg   string
	write func(msg string)
}

func startProgress(after time.Duration, msg string, write func(msg string)) *progress {
	p := &progress{msg: msg, write: write}
	if write == nil {
		p.write = func(string) {}
	}
	p.timer = time.AfterFunc(after, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.done {
			p.write(p.msg)
		}
	})
	return p
}

// step sets what the progress status says from now on.
func (p *progress) step(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msg = msg
}

// now writes the progress status at once: the next step will take time.
func (p *progress) now(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msg = msg
	if !p.done {
		p.timer.Stop()
		p.write(msg)
	}
}

// finish writes the final status (if write is not nil); no progress
// status follows it.
func (p *progress) finish(write func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	p.timer.Stop()
	if write != nil {
		write()
	}
}

func isConflict(err error) bool { return errors.Is(err, kv.ErrConflict) }

// isInvalid reports whether err comes from validation.
func isInvalid(err error) bool {
	var fe *api.FieldError
	return errors.As(err, &fe)
}

// oneLine joins the lines of errors.Join into one message.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

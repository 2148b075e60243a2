// Package lease keeps a registration in etcd under a lease: it grants a
// lease, lets the caller write its keys under it, keeps it alive, and when
// the lease is lost (etcd unreachable for longer than the TTL) grants a new
// one and registers again, with backoff. When the context ends it revokes
// the lease, so that the registration disappears at once rather than after
// the TTL.
//
// Control-plane members (api.MemberKey) and agents (api.AliveKey) both
// register through it.
package lease

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config says what to keep registered.
type Config struct {
	// What names the registration in logs, e.g. "agent a1".
	What string
	// TTL of the lease (default 10 s; etcd rounds up to its minimum,
	// about 2 s).
	TTL time.Duration
	// Register writes the keys under lease. prev is the lease of the
	// previous session when it was lost (0 at first): its keys may still
	// exist, and Register may take them over. Keeper revokes prev once
	// Register succeeded.
	Register func(ctx context.Context, lease, prev clientv3.LeaseID) error
	// Every, if positive, calls Tick at that interval while registered;
	// an error of Tick is logged and Tick runs again at the next one.
	Every time.Duration
	Tick  func(ctx context.Context) error
	// Registered, if set, runs after every registration, and Lost as soon
	// as a lease is lost (before registering again).
	Registered, Lost func()
	// Stopping, if set, runs once when Run ends while registered, just
	// before the lease is revoked (a last word under the live lease).
	Stopping func()
	Log      *slog.Logger
}

// Keeper is one registration.
type Keeper struct {
	cli *clientv3.Client
	cfg Config
	log *slog.Logger

	ready     chan struct{}
	readyOnce sync.Once
	poke      chan struct{} // asks for a Tick now

	mu    sync.Mutex
	lease clientv3.LeaseID
	prev  clientv3.LeaseID
}

// New returns a keeper; call Run.
func New(cli *clientv3.Client, cfg Config) *Keeper {
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Keeper{cli: cli, cfg: cfg, log: cfg.Log, ready: make(chan struct{}), poke: make(chan struct{}, 1)}
}

// Ready is closed once the first registration succeeded.
func (k *Keeper) Ready() <-chan struct{} { return k.ready }

// Poke asks for a Tick now (while registered), for a change that should
// not wait for the next interval. It never blocks.
func (k *Keeper) Poke() {
	select {
	case k.poke <- struct{}{}:
	default:
	}
}

// Lease is the current lease, 0 while unregistered.
func (k *Keeper) Lease() clientv3.LeaseID {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lease
}

// Run registers and keeps the registration until ctx ends, then revokes
// the lease and returns ctx.Err(). Every failure is retried with backoff.
func (k *Keeper) Run(ctx context.Context) error {
	defer k.revokeCurrent()
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := k.session(ctx)
		if ctx.Err() != nil {
			break
		}
		k.log.Warn("registration lost; registering again", "registration", k.cfg.What, "err", err, "in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, 5*time.Second)
	}
	return ctx.Err()
}

// session grants a lease, registers under it, and keeps it alive until the
// lease is lost or ctx ends.
func (k *Keeper) session(ctx context.Context) error {
	ttl := max(int64(k.cfg.TTL.Round(time.Second)/time.Second), 1)
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	g, err := k.cli.Grant(gctx, ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("grant a lease of %d s: %w; is etcd reachable?", ttl, err)
	}
	// The keepalive context is not ctx: Run revokes the lease itself and
	// keepalives must not stop a moment before that.
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	ch, err := k.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		k.revoke(g.ID, false)
		return fmt.Errorf("keep lease %x alive: %w", g.ID, err)
	}
	k.mu.Lock()
	prev := k.prev
	k.mu.Unlock()
	if err := k.cfg.Register(ctx, g.ID, prev); err != nil {
		k.revoke(g.ID, false)
		return err
	}
	if prev != 0 {
		k.revoke(prev, false)
	}
	k.mu.Lock()
	k.lease, k.prev = g.ID, 0
	k.mu.Unlock()
	k.readyOnce.Do(func() { close(k.ready) })
	k.log.Info("registered", "registration", k.cfg.What, "lease", fmt.Sprintf("%x", g.ID), "ttl", ttl)
	if k.cfg.Registered != nil {
		k.cfg.Registered()
	}

	var tick <-chan time.Time
	if k.cfg.Every > 0 && k.cfg.Tick != nil {
		t := time.NewTicker(k.cfg.Every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-ch:
			if !ok {
				k.mu.Lock()
				k.lease, k.prev = 0, g.ID
				k.mu.Unlock()
				if k.cfg.Lost != nil {
					k.cfg.Lost()
				}
				return fmt.Errorf("lease %x expired or could not be kept alive", g.ID)
			}
		case <-tick:
			if err := k.cfg.Tick(ctx); err != nil {
				k.log.Warn("periodic update failed; retrying at the next interval", "registration", k.cfg.What, "err", err)
			}
		case <-k.poke:
			if k.cfg.Tick == nil {
				continue
			}
			if err := k.cfg.Tick(ctx); err != nil {
				k.log.Warn("update failed; retrying in a second", "registration", k.cfg.What, "err", err)
				time.AfterFunc(time.Second, k.Poke)
			}
		}
	}
}

func (k *Keeper) revokeCurrent() {
	k.mu.Lock()
	id := k.lease
	k.lease = 0
	k.mu.Unlock()
	if id != 0 {
		if k.cfg.Stopping != nil {
			k.cfg.Stopping()
		}
		k.revoke(id, true)
	}
}

// revoke ends a lease; final says it is the last one, whose end removes
// the registration.
func (k *Keeper) revoke(id clientv3.LeaseID, final bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := k.cli.Revoke(ctx, id)
	switch {
	case !final:
		k.log.Debug("old lease revoked", "registration", k.cfg.What, "lease", fmt.Sprintf("%x", id), "err", err)
	case err != nil:
		k.log.Warn("could not revoke the lease; the registration ends when it expires", "registration", k.cfg.What, "lease", fmt.Sprintf("%x", id), "err", err)
	default:
		k.log.Info("lease revoked; registration removed", "registration", k.cfg.What)
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

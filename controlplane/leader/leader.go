// Package leader runs the controllers on one control-plane member at a
// time. Members campaign in an etcd election (concurrency.Election at
// api.ElectionPrefix) under a leased session; the winner runs the
// controllers until its session ends (lease lost, etcd unreachable for a
// TTL) or it shuts down, then campaigns again. With one member it simply
// wins.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/internal/kv"
)

// Config says who campaigns and how.
type Config struct {
	// Name is the candidate's value in the election: the member name.
	Name string
	// TTL is the session lease in seconds (default 10): how long the
	// controllers of a dead leader may seem to run before another takes over.
	TTL int
	// Prefix is the election prefix (default api.ElectionPrefix).
	Prefix string
	Log    *slog.Logger
	// Probe, if set, lets a waiting candidate depose a leader that died
	// without resigning (kill -9, power loss) instead of waiting for its
	// session lease to expire: while campaigning, the candidate probes the
	// leader (by its name) every ProbeEvery; after ProbeFailures failures
	// in a row it deletes the leader's election key, comparing its create
	// revision. A leader deposed by mistake (alive but unreachable from
	// this candidate) loses nothing: its writes are fenced by that key, so
	// they fail and it campaigns again. Only a candidate in the quorum
	// deposes: the deletion is a transaction, which commits only through
	// a quorum (it gives up after deposeTimeout).
	Probe func(ctx context.Context, name string) error
	// ProbeEvery (default 500ms) and ProbeFailures (default 3).
	ProbeEvery    time.Duration
	ProbeFailures int
}

// deposeTimeout bounds the transaction that deposes a dead leader; a
// probe and another attempt follow soon (ProbeEvery/5). etcd keeps a write that a follower forwarded to
// a raft leader that just died until its request timeout (5 s + twice the
// election timeout), though the write is lost: when the dead controllers'
// leader also led raft, the first attempt can be such a write. Deleting
// the key again is harmless (it compares the key's create revision).
const deposeTimeout = 500 * time.Millisecond

// errLost says the session ended while leading.
var errLost = errors.New("lost leadership: the election session (lease) ended")

// Run campaigns and calls run while this member leads, with a context that
// ends when leadership is lost and the term's fence: every write the
// controllers make on the cluster's behalf carries fence.Cmp(), so that a
// deposed leader that has not noticed yet (a paused process, a partition)
// cannot write. It repeats until ctx ends, and returns nil then.
func Run(ctx context.Context, cli *clientv3.Client, cfg Config, run func(ctx context.Context, fence kv.Fence) error) error {
	if cfg.TTL <= 0 {
		cfg.TTL = 10
	}
	if cfg.Prefix == "" {
		cfg.Prefix = api.ElectionPrefix
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ProbeEvery <= 0 {
		cfg.ProbeEvery = 500 * time.Millisecond
	}
	if cfg.ProbeFailures <= 0 {
		cfg.ProbeFailures = 3
	}
	log := cfg.Log.With("election", cfg.Prefix, "candidate", cfg.Name)
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		led, err := term(ctx, cli, cfg, log, run)
		if ctx.Err() != nil {
			break
		}
		if led {
			backoff = 200 * time.Millisecond
		}
		log.Warn("not leading; campaigning again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// term is one campaign and, if won, one term of leadership. led reports
// whether run was called.
func term(ctx context.Context, cli *clientv3.Client, cfg Config, log *slog.Logger, run func(context.Context, kv.Fence) error) (led bool, err error) {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(cfg.TTL), concurrency.WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("open an election session (is etcd reachable?): %w", err)
	}
	defer func() {
		// Revoke even when ctx has ended, so that another member need
		// not wait for the lease to expire.
		sess.Orphan()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if _, err := cli.Revoke(rctx, sess.Lease()); err != nil {
			log.Debug("revoke election lease", "err", err)
		}
	}()

	// Campaign until elected, the session ends or ctx ends.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cancelOnDone(cctx, sess.Done(), cancel)
	e := concurrency.NewElection(sess, cfg.Prefix)
	log.Info("campaigning to run the controllers")
	stopProbing := func() {}
	if cfg.Probe != nil {
		var pctx context.Context
		pctx, stopProbing = context.WithCancel(cctx)
		go deposeDead(pctx, cli, cfg, sess.Lease(), log)
	}
	err = e.Campaign(cctx, cfg.Name)
	stopProbing()
	if err != nil {
		if ctx.Err() == nil && isDone(sess.Done()) {
			return false, errLost
		}
		return false, fmt.Errorf("campaign: %w", err)
	}
	if isDone(sess.Done()) {
		return false, errLost
	}
	fence := kv.Fence{Key: e.Key(), CreateRevision: e.Rev()}
	log.Info("elected leader; starting the controllers", "key", fence.Key, "revision", fence.CreateRevision)
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	go cancelOnDone(rctx, sess.Done(), func() {
		log.Warn("lost leadership (session lease ended); stopping the controllers")
		rcancel()
	})
	go func() { // deposed (another candidate deleted the key: Config.Probe)
		for wr := range cli.Watch(rctx, fence.Key, clientv3.WithRev(fence.CreateRevision+1), clientv3.WithFilterPut()) {
			if len(wr.Events) > 0 {
				log.Warn("deposed: another member deleted this leader's election key; stopping the controllers")
				rcancel()
				return
			}
		}
	}()
	err = run(rctx, fence)
	if isDone(sess.Done()) && ctx.Err() == nil {
		return true, errLost
	}
	log.Info("controllers stopped; resigning")
	if ctx.Err() == nil && err == nil {
		err = errors.New("the controllers returned while still leader")
	}
	return true, err
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// cancelOnDone calls cancel when done is closed before ctx ends.
func cancelOnDone(ctx context.Context, done <-chan struct{}, cancel func()) {
	select {
	case <-done:
		cancel()
	case <-ctx.Done():
	}
}

// deposeDead probes the current leader while this candidate waits, and
// deletes the leader's election key once cfg.ProbeFailures probes in a row
// failed (see Config.Probe). It returns when ctx ends or this candidate's
// own key (under lease own) leads.
func deposeDead(ctx context.Context, cli *clientv3.Client, cfg Config, own clientv3.LeaseID, log *slog.Logger) {
	var last kv.Fence
	fails := 0
	wait := cfg.ProbeEvery
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = cfg.ProbeEvery
		// This member's own view (serializable): it answers while etcd
		// elects a raft leader, so probes count from a leader's death;
		// the deletion below commits only through a quorum.
		resp, err := cli.Get(ctx, cfg.Prefix, append(clientv3.WithFirstCreate(), clientv3.WithSerializable())...)
		if err != nil || len(resp.Kvs) == 0 {
			fails = 0 // nobody leads: nothing to depose
			continue
		}
		k := resp.Kvs[0]
		if clientv3.LeaseID(k.Lease) == own {
			return
		}
		f := kv.Fence{Key: string(k.Key), CreateRevision: k.CreateRevision}
		if f != last {
			last, fails = f, 0
		}
		pctx, cancel := context.WithTimeout(ctx, 2*cfg.ProbeEvery)
		perr := cfg.Probe(pctx, string(k.Value))
		cancel()
		if perr == nil || ctx.Err() != nil {
			fails = 0
			continue
		}
		if fails++; fails < cfg.ProbeFailures {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, deposeTimeout)
		tr, err := cli.Txn(tctx).If(f.Cmp()).Then(clientv3.OpDelete(f.Key)).Commit()
		cancel()
		if err != nil {
			// No answer in time, or no raft leader yet: probe and try
			// again soon.
			wait = cfg.ProbeEvery / 5
			continue
		}
		fails = 0
		if tr.Succeeded {
			log.Warn("deposed the controllers' leader: it stopped answering", "leader", string(k.Value), "probes", cfg.ProbeFailures, "err", perr)
		}
	}
}

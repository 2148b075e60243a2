package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Event is one change under a watched prefix.
type Event struct {
	Deleted     bool
	Key         string
	Value       []byte // nil when Deleted
	ModRevision int64  // revision of the change
}

// Batch is what the handler receives: the events of one etcd watch response
// (or of a list), applied in order. Revision is the store revision the
// handler's view is consistent with after the batch. A batch without
// events only moves Revision (etcd reported progress: nothing changed
// under the prefix up to it).
type Batch struct {
	Events []Event
	// Resync is true for a batch that comes from a (re)list: after it, the
	// handler has seen every key that exists; keys it knew that are not in
	// the list arrive as Deleted events in the same batch.
	Resync   bool
	Revision int64
}

// Reflect mirrors prefix into handle: it lists the prefix, then watches from
// the next revision. After a compaction (the revision it needs is gone) it
// lists again and sends the differences, so the handler never misses a
// change, whatever happens to the connection. It returns when ctx ends.
//
// handle is called from one goroutine, never concurrently.
func Reflect(ctx context.Context, cli *clientv3.Client, prefix string, log *slog.Logger, handle func(Batch)) error {
	known := map[string]int64{} // key -> mod revision, to diff a relist
	backoff := 100 * time.Millisecond
	rev := int64(0) // last revision the handler is consistent with; 0 = list
	for ctx.Err() == nil {
		if rev == 0 {
			r, err := relist(ctx, cli, prefix, known, handle)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				log.Warn("list failed; retrying", "prefix", prefix, "err", err, "in", backoff)
				sleep(ctx, backoff)
				backoff = min(backoff*2, 5*time.Second)
				continue
			}
			rev = r
			backoff = 100 * time.Millisecond // listed: the next trouble starts afresh
		}
		before := rev
		err := watch(ctx, cli, prefix, &rev, known, handle)
		if rev != before {
			backoff = 100 * time.Millisecond // the watch worked for a while
		}
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, rpctypes.ErrCompacted):
			log.Info("watch revision compacted; listing again", "prefix", prefix, "rev", rev)
			rev = 0
		default:
			log.Warn("watch ended; resuming", "prefix", prefix, "rev", rev, "err", err)
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
		}
	}
	return ctx.Err()
}

func relist(ctx context.Context, cli *clientv3.Client, prefix string, known map[string]int64, handle func(Batch)) (int64, error) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", prefix, err)
	}
	b := Batch{Resync: true, Revision: resp.Header.Revision}
	seen := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		seen[k] = true
		if known[k] == kv.ModRevision {
			continue
		}
		known[k] = kv.ModRevision
		b.Events = append(b.Events, Event{Key: k, Value: kv.Value, ModRevision: kv.ModRevision})
	}
	for k := range known {
		if !seen[k] {
			delete(known, k)
			b.Events = append(b.Events, Event{Deleted: true, Key: k, ModRevision: resp.Header.Revision})
		}
	}
	handle(b)
	return resp.Header.Revision, nil
}

func watch(ctx context.Context, cli *clientv3.Client, prefix string, rev *int64, known map[string]int64, handle func(Batch)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(*rev+1), clientv3.WithProgressNotify())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		if resp.CompactRevision != 0 {
			return rpctypes.ErrCompacted
		}
		if len(resp.Events) == 0 {
			// A progress notification: etcd sends one only when this
			// watch has sent everything up to the header's revision.
			if resp.Header.Revision > *rev {
				*rev = resp.Header.Revision
				handle(Batch{Revision: *rev})
			}
			continue
		}
		// The batch is consistent up to its last event, not up to the
		// header: a watch catching up sends at most 1000 revisions per
		// response, each headed with etcd's current revision.
		last := resp.Events[len(resp.Events)-1].Kv.ModRevision
		b := Batch{Revision: last, Events: make([]Event, 0, len(resp.Events))}
		for _, ev := range resp.Events {
			k := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete {
				delete(known, k)
				b.Events = append(b.Events, Event{Deleted: true, Key: k, ModRevision: ev.Kv.ModRevision})
				continue
			}
			known[k] = ev.Kv.ModRevision
			b.Events = append(b.Events, Event{Key: k, Value: ev.Kv.Value, ModRevision: ev.Kv.ModRevision})
		}
		handle(b)
		*rev = last
	}
	return errors.New("watch channel closed")
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// RequestProgress asks etcd to tell every Reflect on cli how far it has
// got: each one whose watch has sent everything gets a batch without events
// at etcd's current revision. A handler waiting for a revision that no
// change under its prefix reaches (a write elsewhere) calls it.
func RequestProgress(ctx context.Context, cli *clientv3.Client) error {
	// The same metadata as the watches in watch, so the same gRPC stream.
	return cli.RequestProgress(clientv3.WithRequireLeader(ctx))
}

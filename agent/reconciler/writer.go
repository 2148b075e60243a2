package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
)

// item is one guarded write: put value at key (or delete key) only if
// guardKey's mod_revision is still guardRev (0: guardKey does not exist).
type item struct {
	key      string
	value    []byte
	del      bool
	guardKey string
	guardRev int64
	// fp identifies the content without its timestamp: a put whose fp
	// equals the last one written is skipped.
	fp string
}

func (it item) op() clientv3.Op {
	if it.del {
		return clientv3.OpDelete(it.key)
	}
	return clientv3.OpPut(it.key, string(it.value))
}

type writtenRec struct {
	fp       string
	guardRev int64 // newest guard revision the written content is known to match
}

// writer commits the status records the workers hand it, many per etcd
// transaction, each under its own comparison. A key has at most one write
// waiting; a newer one replaces it, so the last word always wins and a
// write never overtakes an older one of the same key.
type writer struct {
	kv    clientv3.KV
	log   *slog.Logger
	batch int

	mu      sync.Mutex
	pending map[string]*item
	order   []string // keys in pending, oldest first (may hold keys no longer pending)
	written map[string]writtenRec
	wake    chan struct{}
}

func newWriter(c clientv3.KV, log *slog.Logger, batch int) *writer {
	return &writer{kv: c, log: log, batch: batch, pending: map[string]*item{}, written: map[string]writtenRec{}, wake: make(chan struct{}, 1)}
}

// submit queues it, or drops it if etcd already holds that content.
func (w *writer) submit(it item) {
	w.mu.Lock()
	defer w.mu.Unlock()
	rec, wrote := w.written[it.key]
	same := wrote && !it.del && rec.fp == it.fp
	if p := w.pending[it.key]; p != nil {
		if same { // the pending write would only change it back
			delete(w.pending, it.key)
			w.written[it.key] = writtenRec{fp: rec.fp, guardRev: it.guardRev}
			return
		}
		*p = it
		return
	}
	if same {
		w.written[it.key] = writtenRec{fp: rec.fp, guardRev: it.guardRev}
		return
	}
	w.pending[it.key] = &it
	w.order = append(w.order, it.key)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// forget drops what the writer knows about key: its record was deleted.
func (w *writer) forget(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pending, key)
	delete(w.written, key)
}

// covered reports whether etcd holds what the writer last wrote at key
// and it was written (or confirmed) against guardRev.
func (w *writer) covered(key string, guardRev int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	rec, ok := w.written[key]
	return ok && rec.guardRev == guardRev && w.pending[key] == nil
}

func (w *writer) take() []item {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []item
	i := 0
	for ; i < len(w.order) && len(out) < w.batch; i++ {
		k := w.order[i]
		if p := w.pending[k]; p != nil {
			out = append(out, *p)
			delete(w.pending, k)
		}
	}
	w.order = w.order[i:]
	if len(w.order) == 0 {
		w.order = nil
	}
	return out
}

// putBack re-queues items whose write failed, unless a newer write of the
// same key arrived meanwhile.
func (w *writer) putBack(items []item) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, it := range items {
		if w.pending[it.key] == nil {
			it := it
			w.pending[it.key] = &it
			w.order = append(w.order, it.key)
		}
	}
}

func (w *writer) markWritten(items []item) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, it := range items {
		if it.del {
			delete(w.written, it.key)
		} else {
			w.written[it.key] = writtenRec{fp: it.fp, guardRev: it.guardRev}
		}
	}
}

// run commits pending writes until ctx ends.
func (w *writer) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		items := w.take()
		if len(items) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
				continue
			}
		}
		if failed := w.commit(ctx, items); len(failed) > 0 {
			w.putBack(failed)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// flush tries once to commit everything pending, for a clean shutdown.
func (w *writer) flush(ctx context.Context) {
	for ctx.Err() == nil {
		items := w.take()
		if len(items) == 0 {
			return
		}
		if failed := w.commit(ctx, items); len(failed) > 0 {
			w.log.Warn("could not write status records before stopping; the next run writes them", "count", len(failed))
			return
		}
	}
}

// commit writes items in one transaction. If some comparisons fail, the
// Else branch tells which; those writes are stale (their record changed,
// and a newer write follows) and are dropped, the rest are tried again
// together. After a few rounds it falls back to one transaction per item.
// It returns the items that failed for another reason (etcd unreachable),
// to be retried.
func (w *writer) commit(ctx context.Context, items []item) []item {
	for round := 0; round < 3 && len(items) > 0; round++ {
		cmps := make([]clientv3.Cmp, len(items))
		thens := make([]clientv3.Op, len(items))
		elses := make([]clientv3.Op, len(items))
		for i, it := range items {
			cmps[i] = kv.Unchanged(it.guardKey, it.guardRev)
			thens[i] = it.op()
			elses[i] = clientv3.OpGet(it.guardKey, clientv3.WithKeysOnly())
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := w.kv.Txn(tctx).If(cmps...).Then(thens...).Else(elses...).Commit()
		cancel()
		if err != nil {
			w.log.Warn("writing status records failed; retrying", "count", len(items), "err", err)
			return items
		}
		if resp.Succeeded {
			w.markWritten(items)
			return nil
		}
		keep := items[:0:0]
		for i, it := range items {
			cur := int64(0)
			if r := resp.Responses[i].GetResponseRange(); r != nil && len(r.Kvs) > 0 {
				cur = r.Kvs[0].ModRevision
			}
			if cur == it.guardRev {
				keep = append(keep, it)
			} else {
				w.log.Debug("dropping a stale status write", "key", it.key, "guard", it.guardKey, "acted on", it.guardRev, "now", cur)
			}
		}
		items = keep
	}
	var failed []item
	for _, it := range items {
		err := putGuarded(ctx, w.kv, it)
		switch {
		case err == nil:
			w.markWritten([]item{it})
		case isConflict(err):
		default:
			failed = append(failed, it)
		}
	}
	return failed
}

func putGuarded(ctx context.Context, c clientv3.KV, it item) error {
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.Txn(tctx).If(kv.Unchanged(it.guardKey, it.guardRev)).Then(it.op()).Commit()
	if err != nil {
		return fmt.Errorf("write %s: %w", it.key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("write %s: %s changed since revision %d: %w", it.key, it.guardKey, it.guardRev, kv.ErrConflict)
	}
	return nil
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// statusItem turns a node status into a guarded write. update_time is set
// now but left out of the fingerprint.
func statusItem(agent, project, node string, assignRev int64, st *sanbootv1.NodeStatus) item {
	st = proto.CloneOf(st)
	st.UpdateTime = nil
	fp, _ := deterministic.Marshal(st)
	st.UpdateTime = timestamppb.Now()
	val, _ := deterministic.Marshal(st)
	return item{
		key:      api.NodeStatusKey(project, node, agent),
		value:    val,
		guardKey: api.AssignKey(agent, project, node),
		guardRev: assignRev,
		fp:       string(fp),
	}
}

// replicaItem turns an image replica into a guarded write against the
// image's spec revision.
func replicaItem(agent, project, image string, imageRev int64, rep *sanbootv1.ImageReplica) item {
	rep = proto.CloneOf(rep)
	rep.UpdateTime = nil
	fp, _ := deterministic.Marshal(rep)
	rep.UpdateTime = timestamppb.Now()
	val, _ := deterministic.Marshal(rep)
	return item{
		key:      api.ReplicaKey(project, image, agent),
		value:    val,
		guardKey: api.ImageKey(project, image),
		guardRev: imageRev,
		fp:       string(fp),
	}
}

// PutNodeStatus writes a node's status if the node's assignment to agent
// is still at assignRev, the revision the status is about. A stale agent
// (or a stale worker) gets kv.ErrConflict and changes nothing.
func PutNodeStatus(ctx context.Context, c clientv3.KV, agent, project, node string, assignRev int64, st *sanbootv1.NodeStatus) error {
	return putGuarded(ctx, c, statusItem(agent, project, node, assignRev, st))
}

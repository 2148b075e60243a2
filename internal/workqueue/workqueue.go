// Package workqueue is a keyed work queue in the manner of client-go's:
// a key waits in the queue at most once however often it is added, a key is
// never processed by two workers at once, and a key whose processing failed
// comes back after an exponential backoff.
//
// A worker loop:
//
//	for {
//		key, ok := q.Get()
//		if !ok {
//			return // shut down
//		}
//		if err := sync(key); err != nil {
//			q.AddRateLimited(key)
//		} else {
//			q.Forget(key)
//		}
//		q.Done(key)
//	}
package workqueue

import (
	"sync"
	"time"
)

// Queue is a keyed work queue. The zero value is not usable; call New.
type Queue[K comparable] struct {
	mu         sync.Mutex
	cond       *sync.Cond
	queue      []K
	dirty      map[K]bool // waiting in queue, or to be requeued when Done
	processing map[K]bool
	failures   map[K]int
	timers     map[K]*time.Timer
	shutdown   bool
	// peak is the most keys waiting or in process since the queue last
	// let go of its memory (shrinkLocked).
	peak int

	baseDelay, maxDelay time.Duration
}

// New returns a queue whose retries start at base and double up to max.
func New[K comparable](base, max time.Duration) *Queue[K] {
	q := &Queue[K]{
		dirty:      map[K]bool{},
		processing: map[K]bool{},
		failures:   map[K]int{},
		timers:     map[K]*time.Timer{},
		baseDelay:  base,
		maxDelay:   max,
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues key unless it is already waiting. A key being processed is
// queued again when its worker calls Done.
func (q *Queue[K]) Add(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue[K]) addLocked(key K) {
	if q.shutdown || q.dirty[key] {
		return
	}
	q.dirty[key] = true
	q.peak = max(q.peak, len(q.dirty)+len(q.processing))
	if q.processing[key] {
		return
	}
	q.queue = append(q.queue, key)
	q.cond.Signal()
}

// AddRateLimited queues key after a delay that doubles with each failure
// since the last Forget.
func (q *Queue[K]) AddRateLimited(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	n := q.failures[key]
	q.failures[key] = n + 1
	delay := q.baseDelay << min(n, 30)
	if delay > q.maxDelay || delay <= 0 {
		delay = q.maxDelay
	}
	if t, ok := q.timers[key]; ok {
		t.Stop()
	}
	q.timers[key] = time.AfterFunc(delay, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		delete(q.timers, key)
		q.addLocked(key)
	})
}

// Retries is how many times key failed since the last Forget.
func (q *Queue[K]) Retries(key K) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Forget clears key's failure count.
func (q *Queue[K]) Forget(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, key)
}

// Get blocks until a key is ready, and marks it as being processed. It
// returns false once the queue is shut down.
func (q *Queue[K]) Get() (K, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	var zero K
	if q.shutdown {
		return zero, false
	}
	key := q.queue[0]
	q.queue[0] = zero
	q.queue = q.queue[1:]
	delete(q.dirty, key)
	q.processing[key] = true
	q.shrinkLocked()
	return key, true
}

// GetBatch is Get for up to max keys at once: it blocks for the first and
// takes whatever else is ready, so that a worker can write many results in
// one transaction. Call Done for each key.
func (q *Queue[K]) GetBatch(max int) ([]K, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if q.shutdown {
		return nil, false
	}
	n := min(max, len(q.queue))
	keys := make([]K, n)
	copy(keys, q.queue[:n])
	var zero K
	for i := range n {
		q.queue[i] = zero
		delete(q.dirty, keys[i])
		q.processing[keys[i]] = true
	}
	q.queue = q.queue[n:]
	q.shrinkLocked()
	return keys, true
}

// Done marks key as processed; if it was added meanwhile it is queued again.
func (q *Queue[K]) Done(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.dirty[key] && !q.shutdown {
		q.queue = append(q.queue, key)
		q.cond.Signal()
	}
	q.shrinkLocked()
}

// shrinkLocked lets go of what a burst grew once it has passed and
// nothing waits or is in process: a drained queue's slice still holds its
// whole backing array, and a Go map keeps its size when emptied (a burst
// of 10,000 nodes left a queue of the control plane holding 1.5 MB).
func (q *Queue[K]) shrinkLocked() {
	if q.peak < shrinkAfter || len(q.queue) > 0 || len(q.dirty) > 0 || len(q.processing) > 0 {
		return
	}
	q.queue, q.dirty, q.processing, q.peak = nil, map[K]bool{}, map[K]bool{}, 0
}

// shrinkAfter is the peak of keys after which a drained queue lets go of
// its memory; below it, keeping the small maps saves allocations.
const shrinkAfter = 256

// Len is the number of keys waiting.
func (q *Queue[K]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// ShutDown wakes every Get, which then returns false, and drops pending retries.
func (q *Queue[K]) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	for _, t := range q.timers {
		t.Stop()
	}
	q.cond.Broadcast()
}

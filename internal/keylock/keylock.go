// Package keylock is a mutex per key: work on one key (an image, a disk, a
// target) is serialised while work on other keys runs. Waiting honours the
// context, so a caller that gives up does not hold a place in the queue.
package keylock

import (
	"context"
	"sync"
)

// Locks is a set of keyed locks; the zero value is ready to use. A key's
// entry lives only while someone holds or waits for it.
type Locks struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	ch   chan struct{}
	refs int
}

// Lock takes the lock of key and returns its unlock func, or ctx's error
// if ctx ends first.
func (k *Locks) Lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*entry{}
	}
	l := k.m[key]
	if l == nil {
		l = &entry{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; k.release(key, l) }, nil
	case <-ctx.Done():
		k.release(key, l)
		return nil, ctx.Err()
	}
}

func (k *Locks) release(key string, l *entry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(k.m, key)
	}
}

// held is the number of keys held or waited for (for tests).
func (k *Locks) held() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

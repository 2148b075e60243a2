// Package keylock serialises work on one key (an image, a disk) while
// letting work on other keys run; waiting honours the context. The stores
// use it so that two reconciler workers never make the same disk at once.
package keylock

import (
	"context"
	"sync"
)

// Map holds one lock per key, made when first taken and dropped when the
// last holder or waiter is gone. The zero Map is ready to use.
type Map struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	ch   chan struct{}
	refs int
}

// Lock takes the lock of key and returns its unlock func, or the context's
// error if it ends first.
func (k *Map) Lock(ctx context.Context, key string) (func(), error) {
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

func (k *Map) release(key string, l *entry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(k.m, key)
	}
}

// held is the number of keys locked or waited for (for tests).
func (k *Map) held() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

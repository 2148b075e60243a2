package cli

import (
	"context"
	"sync"
)

// inFlight is how many calls apply, diff and delete -f keep in flight: enough to
// fill etcd's batched commits, few enough to bound the client's memory.
const inFlight = 64

// inOrder calls do for items 0..n-1, at most limit at once (within a
// window of limit items from the first not yet emitted), and emit with
// each result in index order, each as soon as it and those before it are
// done: output stays in file order while the calls overlap. emit returning
// false stops the run: calls not started are not made, the context of
// those in flight is cancelled, and inOrder returns once they have ended.
func inOrder[R any](ctx context.Context, n, limit int, do func(ctx context.Context, i int) R, emit func(i int, r R) bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		i int
		r R
	}
	results := make(chan result, limit)
	sem := make(chan struct{}, limit)
	go func() {
		var wg sync.WaitGroup
		defer func() { wg.Wait(); close(results) }()
		for i := range n {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				results <- result{i, do(ctx, i)}
			}()
		}
	}()
	pending := map[int]R{}
	next := 0
	for res := range results {
		pending[res.i] = res.r
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			<-sem // a window: call i+limit starts once i is emitted
			if !emit(next, r) {
				cancel()
				for range results { // let the calls in flight end
				}
				return
			}
			next++
		}
	}
}

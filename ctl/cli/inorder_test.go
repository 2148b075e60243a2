package cli

import (
	"context"
	"sync"
	"testing"
)

// inOrder emits in index order whatever order the calls finish in, never
// runs more than limit at once, and stops when emit says so.
func TestInOrder(t *testing.T) {
	for _, tc := range []struct {
		name        string
		n, limit    int
		stopAt      int // -1: never
		wantEmitted int
	}{
		{"none", 0, 4, -1, 0},
		{"fewer than the limit", 3, 8, -1, 3},
		{"many", 500, 7, -1, 500},
		{"one at a time", 20, 1, -1, 20},
		{"stop", 500, 7, 42, 43},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			running, most, calls := 0, 0, 0
			// Each call waits for the one after it to start (when there is
			// room for both), so calls finish out of order.
			started := make([]chan struct{}, tc.n+1)
			for i := range started {
				started[i] = make(chan struct{})
			}
			var emitted []int
			inOrder(context.Background(), tc.n, tc.limit, func(ctx context.Context, i int) int {
				mu.Lock()
				running++
				calls++
				most = max(most, running)
				mu.Unlock()
				close(started[i])
				if tc.limit > 1 && i+1 < tc.n && (i+1)%tc.limit != 0 {
					select {
					case <-started[i+1]:
					case <-ctx.Done():
					}
				}
				mu.Lock()
				running--
				mu.Unlock()
				return i * i
			}, func(i, r int) bool {
				if r != i*i || i != len(emitted) {
					t.Fatalf("emitted %d (result %d) after %d others", i, r, len(emitted))
				}
				emitted = append(emitted, i)
				return i != tc.stopAt
			})
			if len(emitted) != tc.wantEmitted {
				t.Fatalf("emitted %d, want %d", len(emitted), tc.wantEmitted)
			}
			if most > tc.limit {
				t.Fatalf("%d calls at once, limit %d", most, tc.limit)
			}
			if tc.stopAt >= 0 && calls >= tc.n {
				t.Fatalf("all %d calls were made after a stop at %d", calls, tc.stopAt)
			}
		})
	}
}

package workqueue

import (
	"sync"
	"testing"
	"time"
)

func TestAddDeduplicates(t *testing.T) {
	q := New[string](time.Millisecond, time.Second)
	q.Add("a")
	q.Add("a")
	q.Add("b")
	if got := q.Len(); got != 2 {
		t.Fatalf("Len = %d, want 2", got)
	}
	k, _ := q.Get()
	if k != "a" {
		t.Fatalf("first key %q, want a (FIFO)", k)
	}
}

func TestKeyAddedWhileProcessingComesBackAfterDone(t *testing.T) {
	q := New[string](time.Millisecond, time.Second)
	q.Add("a")
	k, _ := q.Get()
	q.Add(k) // changed while we work on it
	if q.Len() != 0 {
		t.Fatal("a key being processed must not be handed to a second worker")
	}
	q.Done(k)
	if q.Len() != 1 {
		t.Fatal("the key added during processing must be queued on Done")
	}
}

func TestAddRateLimitedBacksOffAndForgetResets(t *testing.T) {
	q := New[string](time.Millisecond, 8*time.Millisecond)
	for want := 1; want <= 5; want++ {
		q.AddRateLimited("a")
		k, ok := q.Get()
		if !ok || k != "a" {
			t.Fatalf("Get = %q %v", k, ok)
		}
		q.Done(k)
		if got := q.Retries("a"); got != want {
			t.Fatalf("Retries = %d, want %d", got, want)
		}
	}
	q.Forget("a")
	if got := q.Retries("a"); got != 0 {
		t.Fatalf("Retries after Forget = %d", got)
	}
}

func TestGetBatchAndShutDown(t *testing.T) {
	q := New[int](time.Millisecond, time.Second)
	for i := range 10 {
		q.Add(i)
	}
	keys, ok := q.GetBatch(4)
	if !ok || len(keys) != 4 || keys[0] != 0 || keys[3] != 3 {
		t.Fatalf("GetBatch = %v %v", keys, ok)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, ok := q.Get(); !ok {
				return
			}
		}
	}()
	q.ShutDown()
	wg.Wait()
}

// TestBurstMemoryGoesOnceDrained: after a burst of keys has been processed
// the queue lets go of the slice and maps it grew, and works as before.
func TestBurstMemoryGoesOnceDrained(t *testing.T) {
	for _, tc := range []struct {
		name   string
		keys   int
		shrunk bool
	}{
		{"a few keys", 10, false},
		{"a burst", 10000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := New[int](time.Millisecond, time.Second)
			for k := range tc.keys {
				q.Add(k)
			}
			for range tc.keys / 2 {
				k, _ := q.Get()
				q.Done(k)
			}
			batch, _ := q.GetBatch(tc.keys)
			if len(batch) != tc.keys-tc.keys/2 {
				t.Fatalf("batch of %d keys, want %d", len(batch), tc.keys-tc.keys/2)
			}
			q.Add(batch[0]) // added while in process: back after Done
			for _, k := range batch {
				q.Done(k)
			}
			if k, _ := q.Get(); k != batch[0] {
				t.Fatalf("got %d, want %d again", k, batch[0])
			}
			q.Done(batch[0])
			q.mu.Lock()
			shrunk := q.queue == nil && q.peak == 0
			q.mu.Unlock()
			if shrunk != tc.shrunk {
				t.Errorf("drained queue let go of its memory: %v, want %v", shrunk, tc.shrunk)
			}
			q.Add(1)
			if k, _ := q.Get(); k != 1 {
				t.Errorf("after draining: got %d, want 1", k)
			}
		})
	}
}

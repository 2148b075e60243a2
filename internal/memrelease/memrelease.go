// Package memrelease gives a daemon's memory back to the system after a
// burst of work.
//
// Go's runtime returns freed heap memory slowly: it keeps about 10% over
// the heap goal, and the goal is set by the last collection — during a
// burst, when much was live. A control-plane member that has just created
// 10,000 nodes keeps its peak RSS until the next collection, which an
// idle process reaches only through the runtime's forced collection two
// minutes later. Run watches the runtime's own figures and, once no
// collection has happened for a whole interval (the burst is over) while
// much more free heap is held than the live heap warrants, collects and
// returns the free memory at once (debug.FreeOSMemory): one collection per
// burst, never during one.
package memrelease

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Sample is what Run reads of the runtime at each tick.
type Sample struct {
	// Cycles counts the collections so far.
	Cycles uint64
	// Free is heap memory free and not yet returned to the system.
	Free uint64
	// Live is the heap the last collection found live.
	Live uint64
}

// MinFree is the least free heap worth a collection to return.
const MinFree = 32 << 20

// ShouldRelease says whether to collect and return memory now, given the
// sample of the tick before (prev) and this one: when no collection
// happened in between (the process is quiet) and the free heap is at
// least MinFree and a quarter of the live heap.
func ShouldRelease(prev, cur Sample) bool {
	return cur.Cycles == prev.Cycles && cur.Free >= MinFree && cur.Free >= cur.Live/4
}

var names = []string{"/gc/cycles/total:gc-cycles", "/memory/classes/heap/free:bytes", "/gc/heap/live:bytes"}

// Read samples the runtime.
func Read() Sample {
	ms := make([]metrics.Sample, len(names))
	for i, n := range names {
		ms[i].Name = n
	}
	metrics.Read(ms)
	v := func(i int) uint64 {
		if ms[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return ms[i].Value.Uint64()
	}
	return Sample{Cycles: v(0), Free: v(1), Live: v(2)}
}

// Run checks every interval until ctx ends, and releases memory when
// ShouldRelease says so; interval <= 0 turns it off.
func Run(ctx context.Context, log *slog.Logger, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	prev := Read()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := Read()
		if ShouldRelease(prev, cur) {
			begin := time.Now()
			debug.FreeOSMemory()
			after := Read()
			log.Debug("returned free memory to the system after a burst", "free_mib", cur.Free>>20, "live_mib", after.Live>>20,
				"took", time.Since(begin))
			cur = after
		}
		prev = cur
	}
}

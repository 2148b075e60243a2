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
// the heap holds much more memory than is live (garbage not yet
// collected, and free memory not yet returned), collects and returns the
// free memory at once (debug.FreeOSMemory): at most one collection per
// interval, never during a burst, and only after at least MinExcess of
// garbage or free memory — about as often as the runtime would collect
// anyway.
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
	// Held is the heap memory the process holds from the system: objects
	// (live or garbage), unused parts of spans, and free memory not yet
	// returned.
	Held uint64
	// Live is the heap the last collection found live.
	Live uint64
}

// MinExcess is the least memory held beyond the live heap that is worth a
// collection to return.
const MinExcess = 32 << 20

// ShouldRelease says whether to collect and return memory now, given the
// sample of the tick before (prev) and this one: when no collection
// happened in between (the process is quiet) and the heap holds, beyond
// what is live, at least MinExcess and a quarter of the live heap.
func ShouldRelease(prev, cur Sample) bool {
	if cur.Cycles != prev.Cycles || cur.Held <= cur.Live {
		return false
	}
	excess := cur.Held - cur.Live
	return excess >= MinExcess && excess >= cur.Live/4
}

var names = []string{"/gc/cycles/total:gc-cycles", "/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes", "/memory/classes/heap/free:bytes"}

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
	return Sample{Cycles: v(0), Live: v(1), Held: v(2) + v(3) + v(4)}
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
			log.Debug("returned memory to the system after a burst", "held_mib", cur.Held>>20, "live_mib", after.Live>>20,
				"took", time.Since(begin))
			cur = after
		}
		prev = cur
	}
}

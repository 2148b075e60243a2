package memrelease_test

import (
	"runtime"
	"testing"

	"github.com/sanboot/sanboot/internal/memrelease"
)

func TestShouldRelease(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name      string
		prev, cur memrelease.Sample
		want      bool
	}{
		{"quiet after a burst", memrelease.Sample{Cycles: 70}, memrelease.Sample{Cycles: 70, Free: 50 * mib, Live: 60 * mib}, true},
		{"still collecting: a burst goes on", memrelease.Sample{Cycles: 69}, memrelease.Sample{Cycles: 70, Free: 50 * mib, Live: 60 * mib}, false},
		{"little free memory", memrelease.Sample{Cycles: 70}, memrelease.Sample{Cycles: 70, Free: 8 * mib, Live: 10 * mib}, false},
		{"free memory small beside a large live heap", memrelease.Sample{Cycles: 70}, memrelease.Sample{Cycles: 70, Free: 40 * mib, Live: 400 * mib}, false},
		{"at the thresholds", memrelease.Sample{Cycles: 70}, memrelease.Sample{Cycles: 70, Free: memrelease.MinFree, Live: 4 * memrelease.MinFree}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := memrelease.ShouldRelease(tc.prev, tc.cur); got != tc.want {
				t.Errorf("ShouldRelease(%+v, %+v) = %v, want %v", tc.prev, tc.cur, got, tc.want)
			}
		})
	}
}

// TestReadSeesTheRuntime: Read returns the runtime's figures (a
// collection counts, a live heap is there).
func TestReadSeesTheRuntime(t *testing.T) {
	before := memrelease.Read()
	keep := make([]byte, 8<<20)
	runtime.GC()
	after := memrelease.Read()
	if after.Cycles <= before.Cycles {
		t.Errorf("collections %d then %d: a GC did not count", before.Cycles, after.Cycles)
	}
	if after.Live < 8<<20 {
		t.Errorf("live heap %d with 8 MiB held", after.Live)
	}
	runtime.KeepAlive(keep)
}

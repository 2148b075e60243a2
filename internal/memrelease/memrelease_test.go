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
		{"quiet after a burst", memrelease.Sample{Cycles: 70}, memrelease.Sample{Cycles: 70, Held: 120 * mib, Live: 70 * mib}, true},
		{"still collecting: a burst goes on", memrelease.Sample{Cycles: 69}, memrelease.Sample{Cycles: 70, Held: 120 * mib, Live: 70 * mib}, false},
		{"little beyond the live heap", memrelease.Sample{Cycles: 70}, memrelease.Sample{Cycles: 70, Held: 18 * mib, Live: 10 * mib}, false},
		{"small beside a large live heap", memrelease.Sample{Cycles: 70}, memrelease.Sample{Cycles: 70, Held: 440 * mib, Live: 400 * mib}, false},
		{"nothing beyond the live heap", memrelease.Sample{Cycles: 70}, memrelease.Sample{Cycles: 70, Held: 60 * mib, Live: 70 * mib}, false},
		{"at the thresholds", memrelease.Sample{Cycles: 70}, memrelease.Sample{Cycles: 70, Held: 5 * memrelease.MinExcess, Live: 4 * memrelease.MinExcess}, true},
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
	if after.Live < 8<<20 || after.Held < after.Live {
		t.Errorf("live heap %d, held %d, with 8 MiB kept", after.Live, after.Held)
	}
	runtime.KeepAlive(keep)
}

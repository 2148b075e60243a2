package filestore_test

import (
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/internal/looptest"
)

// BenchmarkCloneBySize clones a 1 GiB and a 10 GiB sparse image on reflink
// XFS (a loop device: needs root). Both hold the same 4 MiB of data in four
// 1 MiB runs (so the same number of extents) at 0, a quarter, a half and
// three quarters of their size; the rest is holes. Each iteration clones
// both, in alternating order, and deletes the clones. It reports the median
// time of a clone of each and the ratio 10 GiB : 1 GiB, which stays near 1
// when a clone's cost does not grow with the image's size.
//
//	go test -run '^$' -bench CloneBySize -benchtime 100x ./agent/store/filestore
func BenchmarkCloneBySize(b *testing.B) {
	sizes := []int64{1 << 30, 10 << 30}
	// Clone reserves the disk's whole size in free space (a node may write
	// all of it): the file system must be larger than the largest image.
	src := &sources{}
	s := newStore(b, mountStore(b, looptest.XFS, 16<<30), opts{src: src})
	if m := s.CloneMode(); m != store.CloneReflink {
		b.Fatalf("clone mode on XFS is %q, want reflink: is mkfs.xfs new enough for -m reflink=1?", m)
	}
	names := make([]string, len(sizes))
	for i, size := range sizes {
		names[i] = fmt.Sprintf("golden-%dg", size>>30)
		mustImport(b, s, src, names[i], size, func() io.Reader { return patterned(size, 0, size/4, size/2, size/4*3) })
	}
	took := make([][]time.Duration, len(sizes))
	b.ResetTimer()
	for i := range b.N {
		for k := range sizes {
			j := (i + k) % len(sizes) // alternate which goes first
			node := fmt.Sprintf("node-%d-%d", i, j)
			start := time.Now()
			if _, err := s.Clone(ctx, "default", names[j], node, ""); err != nil {
				b.Fatal(err)
			}
			took[j] = append(took[j], time.Since(start))
			b.StopTimer()
			if err := s.DeleteDisk(ctx, "default", node); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	// Medians: one slow fsync on a shared machine moves a mean a lot.
	per := func(j int) float64 {
		slices.Sort(took[j])
		return float64(took[j][len(took[j])/2].Microseconds()) / 1000
	}
	b.ReportMetric(per(0), "ms/clone-1GiB")
	b.ReportMetric(per(1), "ms/clone-10GiB")
	b.ReportMetric(per(1)/per(0), "ratio-10GiB:1GiB")
}

package filestore_test

import (
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/sanboot/sanboot/internal/looptest"
)

// BenchmarkClone clones a 1 GiB image holding 64 MiB of data (1 MiB every
// 16 MiB): reflink on XFS (a loop device: needs root) against a sparse copy
// on the plain temp dir (ext4 here). It reports the time per clone and the
// free space each clone took.
//
//	go test -run '^$' -bench Clone -benchtime 20x ./agent/store/filestore
func BenchmarkClone(b *testing.B) {
	const size = 1 << 30
	var at []int64
	for off := int64(0); off < size; off += 16 << 20 {
		at = append(at, off)
	}
	for _, tc := range []struct {
		name string
		root func(b *testing.B) string
	}{
		{"xfs", func(b *testing.B) string { return mountStore(b, looptest.XFS, 3<<30) }},
		{"tempdir", func(b *testing.B) string { return filepath.Join(b.TempDir(), "store") }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			src := &sources{}
			s := newStore(b, tc.root(b), opts{src: src})
			mustImport(b, s, src, "golden", size, func() io.Reader { return patterned(size, at...) })
			b.Logf("clone mode on %s: %s", tc.name, s.CloneMode())
			var took time.Duration
			var used int64
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				before := free(b, s)
				node := fmt.Sprintf("node-%d", i)
				b.StartTimer()
				start := time.Now()
				if _, err := s.Clone(ctx, "default", "golden", node, ""); err != nil {
					b.Fatal(err)
				}
				took += time.Since(start)
				b.StopTimer()
				used += before - free(b, s)
				if err := s.DeleteDisk(ctx, "default", node); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(took.Microseconds())/1000/float64(b.N), "ms/clone")
			b.ReportMetric(float64(used)/(1<<20)/float64(b.N), "MiB-used/clone")
		})
	}
}

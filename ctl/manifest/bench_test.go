package manifest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sanboot/sanboot/ctl/manifest"
)

// BenchmarkDecodeFleet decodes a manifest of an image and 10,000 nodes,
// the file BenchmarkApply (bench/) applies.
func BenchmarkDecodeFleet(b *testing.B) {
	var s strings.Builder
	s.WriteString("apiVersion: sanboot.io/v1\nkind: Image\nmetadata:\n  name: golden\nspec:\n  sizeBytes: 1073741824\n")
	for i := range 10_000 {
		fmt.Fprintf(&s, "---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata:\n  name: n%05d\n  labels: {rack: r%02d}\nspec:\n  image: golden\n", i, i%40)
	}
	data := []byte(s.String())
	b.ReportAllocs()
	for b.Loop() {
		objs, err := manifest.Decode(data, "fleet.yaml", ".", "default", true)
		if err != nil || len(objs) != 10_001 {
			b.Fatalf("%d objects, %v", len(objs), err)
		}
	}
}

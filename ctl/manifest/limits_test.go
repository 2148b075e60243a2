package manifest_test

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/sanboot/sanboot/ctl/manifest"
)

// hostile are manifests that used to cost gigabytes before they were
// refused: a flow sequence nested 100,000 deep (200 KB), a 50 MB file.
func nested(depth int) string {
	return "apiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: n}\nspec:\n  image: i\n  x: " +
		strings.Repeat("[", depth) + strings.Repeat("]", depth) + "\n"
}

func huge() []byte {
	var b bytes.Buffer
	b.Grow(50 << 20)
	for i := 0; b.Len() < 50<<20; i++ {
		b.WriteString("---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: n")
		b.WriteString(strings.Repeat("x", 10))
		b.WriteString("}\nspec: {image: golden, labels: {rack: r1, row: a, room: b}}\n")
	}
	return b.Bytes()
}

// allocated runs f and returns the bytes it allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestHostileManifestsAreRefusedCheaply(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "deep.yaml")
	big := filepath.Join(dir, "big.yaml")
	hugeData := huge()
	if err := os.WriteFile(deep, []byte(nested(100000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, hugeData, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		in    manifest.Input
		want  string
		bound uint64
	}{
		{"100,000 deep, file", manifest.Input{Paths: []string{deep}}, "deep.yaml:6:", 16 << 20},
		{"100,000 deep, stdin", manifest.Input{Paths: []string{"-"}, Stdin: strings.NewReader(nested(100000))}, "nests more than 64 levels", 16 << 20},
		{"100,000 deep, validating", manifest.Input{Paths: []string{deep}, Validate: true}, "nests more than 64 levels", 16 << 20},
		{"50 MB file", manifest.Input{Paths: []string{big}}, "big.yaml: is larger than 8 MiB", 1 << 20},
		{"50 MB stdin", manifest.Input{Paths: []string{"-"}, Stdin: bytes.NewReader(hugeData)}, "<stdin>: is larger than 8 MiB", 64 << 20},
		{"compact sequences", manifest.Input{Paths: []string{"-"}, Stdin: strings.NewReader("x: " + strings.Repeat("- ", 100000) + "a\n")}, "nests more than 64", 16 << 20},
		{"indentation", manifest.Input{Paths: []string{"-"}, Stdin: strings.NewReader("x:\n" + strings.Repeat(" ", 1000) + "a: b\n")}, "indented more than 256", 16 << 20},
		{"aliases", manifest.Input{Paths: []string{"-"}, Stdin: strings.NewReader("a: &a [x]\nb: [" + strings.Repeat("*a, ", 2000) + "*a]\n")}, "more than 1024 aliases", 16 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = manifest.Load(tc.in) })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v; want an error containing %q", err, tc.want)
			}
			if n > tc.bound {
				t.Errorf("Load allocated %d MiB before refusing; want at most %d MiB", n>>20, tc.bound>>20)
			}
		})
	}
}

// Brackets, quotes and bars in text do not count as nesting.
func TestShapeCheckReadsText(t *testing.T) {
	doc := "apiVersion: sanboot.io/v1\nkind: Image\nmetadata:\n  name: i\n  labels: {a: '[[[[', b: \"{{{{\\\"\"}\nspec:\n" +
		"  description: |\n    " + strings.Repeat("[", 200) + "\n    # not a comment\n  sizeBytes: 1GiB # [[[[\n" +
		"  source: {blank: {}}\n"
	objs, err := manifest.Load(manifest.Input{Paths: []string{"-"}, Stdin: strings.NewReader(doc)})
	if err != nil || len(objs) != 1 {
		t.Fatalf("Load: %v, %v", objs, err)
	}
}

// Package golden compares what a test produced with a file under
// testdata/; `go test -update` writes the files instead, to be read in
// the diff. A test package that uses it defines no -update flag of its
// own.
package golden

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Check fails t unless got equals testdata/name (or, with -update, writes
// it there).
func Check(t testing.TB, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("differs from %s (go test -update rewrites it)\n--- got:\n%s--- want:\n%s", path, got, want)
	}
}

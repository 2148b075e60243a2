package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// apply of many nodes overlaps its calls, yet prints one line per node in
// file order, and an object the API refuses is reported with its FILE:LINE
// while the others are applied.
func TestApplyManyNodesInFileOrder(t *testing.T) {
	_, addr := seededFake(t)
	const n = 300
	var b strings.Builder
	var want strings.Builder
	bad := 137
	for i := range n {
		image := "debian-13"
		if i == bad {
			image = "no-such-image"
		} else {
			fmt.Fprintf(&want, "node/many-%03d created\n", i)
		}
		fmt.Fprintf(&b, "---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata:\n  name: many-%03d\nspec:\n  image: %s\n", i, image)
	}
	file := filepath.Join(t.TempDir(), "many.yaml")
	writeFile(t, file, b.String())

	r := runCLI(t, testCtx(t), nil, "--endpoints", addr, "apply", "-f", file)
	if r.stdout != want.String() {
		t.Fatalf("stdout is not one line per node in file order:\n%s", r.stdout)
	}
	// Each document is 7 lines; the bad one's "apiVersion" is on line 7*bad+2.
	wantErr := fmt.Sprintf("%s:%d:1: node/many-%03d: ", file, 7*bad+2, bad)
	if r.code == 0 || !strings.Contains(r.stderr, wantErr) || !strings.Contains(r.stderr, "no-such-image") {
		t.Fatalf("exit %d, stderr %q; want the error of node/many-%03d at %s", r.code, r.stderr, bad, wantErr)
	}

	again := runCLI(t, testCtx(t), nil, "--endpoints", addr, "apply", "-f", file)
	if got := strings.Count(again.stdout, " unchanged\n"); got != n-1 {
		t.Fatalf("second apply: %d unchanged, want %d:\n%s", got, n-1, again.stdout)
	}
}

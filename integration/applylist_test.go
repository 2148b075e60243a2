package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listedFleet is more nodes than sanbootctl's threshold for reading a
// project with one list (ctl/cli listAtLeast).
const listedFleet = 250

// fleetFile writes an image and n nodes; label gives node i's rack label,
// image its image.
func fleetFile(t *testing.T, n int, label func(i int) string, image func(i int) string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: sanboot.io/v1\nkind: Image\nmetadata:\n  name: golden\nspec:\n  sizeBytes: 4194304\n")
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata:\n  name: n%04d\n  labels: {rack: %s}\nspec:\n  image: %s\n", i, label(i), image(i))
	}
	file := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// apply and diff of a project they read with one list: an unchanged node
// costs no write, the others are written (or refused, with FILE:LINE) and
// every line comes in file order.
func TestApplyDecidesFromOneList(t *testing.T) {
	s := startWith(t, true)
	rack := func(i int) string { return fmt.Sprintf("r%d", i%4) }
	golden := func(int) string { return "golden" }
	file := fleetFile(t, listedFleet, rack, golden)
	s.ctl("apply", "-f", file, "--wait") // then the scheduler and the agent write no more

	before := s.revision()
	if out := s.ctl("diff", "-f", file); out != "" {
		t.Fatalf("diff of the applied file printed:\n%s", out)
	}
	out := s.ctl("apply", "-f", file)
	if got := strings.Count(out, " unchanged\n"); got != 1+listedFleet {
		t.Fatalf("second apply: %d objects unchanged, want %d:\n%s", got, 1+listedFleet, out)
	}
	if after := s.revision(); after != before {
		t.Fatalf("diff and the unchanged apply moved etcd from revision %d to %d", before, after)
	}

	// Three nodes relabelled, one with another image (refused: a node's
	// image never changes), and two new ones.
	relabel := map[int]bool{3: true, 100: true, 240: true}
	changed := fleetFile(t, listedFleet+2, func(i int) string {
		if relabel[i] {
			return "moved"
		}
		return rack(i)
	}, func(i int) string {
		if i == 7 {
			return "other"
		}
		return "golden"
	})
	other := filepath.Join(t.TempDir(), "other.yaml")
	if err := os.WriteFile(other, []byte("apiVersion: sanboot.io/v1\nkind: Image\nmetadata:\n  name: other\nspec:\n  sizeBytes: 4194304\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.ctl("apply", "-f", other)
	code, diff, errOut := s.run("diff", "-f", changed)
	if code != 2 || !strings.Contains(errOut, "node/n0007: ") || !strings.Contains(errOut, "cannot change") {
		t.Fatalf("diff of a changed file: exit %d, want 2 and the refusal of node/n0007\nstderr: %s", code, errOut)
	}
	for _, name := range []string{"n0003", "n0100", "n0240", "n0250", "n0251"} {
		if !strings.Contains(diff, "applied node/"+name+"\n") {
			t.Errorf("the diff does not show node/%s:\n%s", name, diff)
		}
	}
	if strings.Count(diff, "+++ ") != 5 {
		t.Errorf("the diff shows %d objects, want 5:\n%s", strings.Count(diff, "+++ "), diff)
	}

	code, out, errOut = s.run("apply", "-f", changed)
	if code == 0 {
		t.Fatalf("apply of a node with another image: exit 0, want an error\n%s", out)
	}
	// Node i's document starts on line 7+8*i (the image's takes 6, each
	// node's 8 with its ---): apiVersion is the line after ---.
	if want := fmt.Sprintf("%s:%d:1: node/n0007: ", changed, 6+8*7+2); !strings.Contains(errOut, want) || !strings.Contains(errOut, "cannot change") {
		t.Errorf("stderr %q; want the refusal of node/n0007 at %s", errOut, want)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 1+listedFleet+2-1 {
		t.Fatalf("apply printed %d lines, want %d", len(lines), 1+listedFleet+1)
	}
	k := 1
	for i := range listedFleet + 2 {
		want := fmt.Sprintf("node/n%04d unchanged", i)
		switch {
		case i == 7:
			continue
		case relabel[i]:
			want = fmt.Sprintf("node/n%04d configured", i)
		case i >= listedFleet:
			want = fmt.Sprintf("node/n%04d created", i)
		}
		if lines[k] != want {
			t.Fatalf("line %d is %q, want %q (file order)", k, lines[k], want)
		}
		k++
	}
}

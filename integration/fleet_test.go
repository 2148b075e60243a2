package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// fleetSize is how many nodes TestApplyFleetWait applies.
const fleetSize = 10_000

// sanbootctl apply -f --wait of a fleet, through the command tree, against
// a real API server, scheduler and agent (fake driver, FAKE store): every
// node is created and Ready, the wait sees every one of them (it reads the
// apply's writes however far the API's cache lags), and exit is 0. A
// second apply finds every node unchanged and writes nothing.
func TestApplyFleetWait(t *testing.T) {
	if testing.Short() {
		t.Skip("applies 10,000 nodes; run without -short")
	}
	s := startWith(t, true)
	s.ctlTimeout = 20 * time.Minute
	var b strings.Builder
	b.WriteString("apiVersion: sanboot.io/v1\nkind: Image\nmetadata:\n  name: golden\nspec:\n  sizeBytes: 4194304\n")
	for i := range fleetSize {
		fmt.Fprintf(&b, "---\napiVersion: sanboot.io/v1\nkind: Node\nmetadata:\n  name: n%05d\n  labels: {rack: r%02d}\nspec:\n  image: golden\n", i, i%40)
	}
	file := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	out := s.ctl("apply", "-f", file, "--wait", "--timeout", "20m")
	t.Logf("apply --wait of %d nodes: %s (a figure, not a check)", fleetSize, time.Since(began).Round(time.Millisecond))
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	// image created, fleetSize nodes created, image ready, fleetSize nodes ready
	if len(lines) != 2+2*fleetSize {
		t.Fatalf("apply --wait printed %d lines, want %d", len(lines), 2+2*fleetSize)
	}
	if lines[0] != "image/golden created" || lines[1+fleetSize] != "image/golden ready" {
		t.Fatalf("apply --wait printed %q and %q for the image", lines[0], lines[1+fleetSize])
	}
	for i := range fleetSize {
		if want := fmt.Sprintf("node/n%05d created", i); lines[1+i] != want {
			t.Fatalf("line %d is %q, want %q (file order)", 1+i, lines[1+i], want)
		}
	}
	if ready := strings.Count(out, " ready\n"); ready != 1+fleetSize {
		t.Fatalf("%d objects ready, want %d", ready, 1+fleetSize)
	}

	// Every node is Ready, as the API lists it (a rack at a time: one
	// message of 10,000 nodes is larger than gRPC's default limit).
	listed := 0
	for r := range 40 {
		resp, err := s.api.ListNodes(s.ctx, &sanbootv1.ListRequest{LabelSelector: fmt.Sprintf("rack=r%02d", r)})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range resp.GetNodes() {
			listed++
			if n.GetStatus().GetPhase() != api.PhaseReady {
				t.Fatalf("node %s is %s: %s", n.GetMetadata().GetName(), n.GetStatus().GetPhase(), n.GetStatus().GetMessage())
			}
		}
	}
	if listed != fleetSize {
		t.Fatalf("ListNodes: %d nodes, want %d", listed, fleetSize)
	}

	// Applied again: nothing changes, nothing is written.
	before := s.revision()
	began = time.Now()
	out = s.ctl("apply", "-f", file)
	t.Logf("unchanged apply of %d nodes: %s", fleetSize, time.Since(began).Round(time.Millisecond))
	if got := strings.Count(out, " unchanged\n"); got != 1+fleetSize {
		t.Fatalf("second apply: %d objects unchanged, want %d", got, 1+fleetSize)
	}
	if after := s.revision(); after != before {
		t.Fatalf("the second apply moved etcd from revision %d to %d", before, after)
	}
}

// revision is etcd's current revision.
func (s *system) revision() int64 {
	s.t.Helper()
	resp, err := s.cli.Get(s.ctx, api.Prefix, clientv3.WithCountOnly())
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.Header.Revision
}

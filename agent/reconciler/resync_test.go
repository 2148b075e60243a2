package reconciler

import (
	"errors"
	"testing"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// TestGCKeepsTargetsOfDeletingNodes: the GC leaves the target of a node
// being deleted to its teardown (during a mass delete both removed the
// same targets, 121 of 500 in one run); it keeps a broken assignment's
// default target and removes the rest.
func TestGCKeepsTargetsOfDeletingNodes(t *testing.T) {
	custom := "iqn.2026-11.io.sanboot:custom.n3"
	wanted := wantedIQNs(map[ref]assignState{
		{"p", "n1"}: {a: &sanbootv1.Assignment{}},
		{"p", "n2"}: {a: &sanbootv1.Assignment{Deleting: true}},
		{"p", "n3"}: {a: &sanbootv1.Assignment{Deleting: true, TargetIqn: custom}},
		{"p", "n4"}: {err: errors.New("cannot decode")},
	})
	for _, iqn := range []string{api.TargetIQN("", "p", "n1"), api.TargetIQN("", "p", "n2"), custom, api.TargetIQN("", "p", "n4")} {
		if !wanted[iqn] {
			t.Errorf("the GC would remove %s", iqn)
		}
	}
	if gone := api.TargetIQN("", "p", "n5"); wanted[gone] {
		t.Errorf("the GC keeps %s, which no assignment names", gone)
	}
}

package apiserver_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
)

// DeleteNode with keep_disk writes, with the deletion, a snapshot image of
// the node's disk on its agent, and says its name in the status message
// and in an event; a node that was never placed has no disk to keep.
func TestDeleteNodeKeepDisk(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	e.agent("a", 10, "img")
	e.node("n1", "img")
	e.waitNode("n1", func(n *sanbootv1.Node) bool { return n.Status.Agent == "a" })

	n, err := e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: "n1", KeepDisk: true})
	if err != nil {
		t.Fatal(err)
	}
	msg := n.GetStatus().GetMessage()
	if !strings.HasPrefix(msg, apiserver.KeptDiskPrefix) {
		t.Fatalf("status message %q does not name the kept image", msg)
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(msg, apiserver.KeptDiskPrefix), "; ")
	if !strings.HasPrefix(name, "n1-disk-") || api.ValidateName("image", name) != nil {
		t.Fatalf("kept image name %q", name)
	}
	im, err := e.api.GetImage(e.ctx, &sanbootv1.GetRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	sp := im.GetSpec()
	if sp.GetSource().GetSnapshot().GetNode() != "n1" || sp.GetParent() != "img" || len(sp.GetAgents()) != 1 || sp.GetAgents()[0] != "a" || sp.GetSizeBytes() != 1<<20 {
		t.Fatalf("kept image spec = %v", sp)
	}
	got, err := e.api.GetNode(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil || !got.GetSpec().GetKeepDisk() || got.GetMetadata().GetDeleteTime() == nil {
		t.Fatalf("node after delete = %v, %v", got, err)
	}
	evs, err := e.api.ListNodeEvents(e.ctx, &sanbootv1.GetRequest{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs.GetEvents() {
		found = found || (ev.GetReason() == "DiskKept" && strings.Contains(ev.GetMessage(), name))
	}
	if !found {
		t.Errorf("no DiskKept event naming %s in %v", name, evs.GetEvents())
	}
	// Deleting again changes nothing and makes no second image.
	if _, err := e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: "n1", KeepDisk: true}); err != nil {
		t.Fatal(err)
	}
	list, err := e.api.ListImages(e.ctx, &sanbootv1.ListRequest{})
	if err != nil || len(list.GetImages()) != 2 {
		t.Fatalf("images after a second delete = %v, %v", list.GetImages(), err)
	}

	// Never placed (no agent holds its image): no disk, no image.
	e.image("default", "lonely")
	e.node("n2", "lonely")
	n, err = e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: "n2", KeepDisk: true})
	if err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatal(err)
	}
	if strings.Contains(n.GetStatus().GetMessage(), apiserver.KeptDiskPrefix) {
		t.Fatalf("an unplaced node's disk was kept: %q", n.GetStatus().GetMessage())
	}
}

func TestKeptDiskName(t *testing.T) {
	long := strings.Repeat("a", 50) + "-" + strings.Repeat("b", 12)
	for _, node := range []string{"n1", long} {
		name := apiserver.KeptDiskName(node, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
		if err := api.ValidateName("image", name); err != nil || !strings.HasSuffix(name, "-disk-20250102-030405") {
			t.Errorf("KeptDiskName(%q) = %q: %v", node, name, err)
		}
	}
}

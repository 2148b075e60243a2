package apiserver_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

func snapshotImage(name, node string) *sanbootv1.Image {
	return &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: name},
		Spec:     &sanbootv1.ImageSpec{Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: node}}}},
	}
}

func copyImage(name, from string) *sanbootv1.Image {
	return &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: name},
		Spec:     &sanbootv1.ImageSpec{Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Copy{Copy: &sanbootv1.CopySource{Image: from}}}},
	}
}

func (e *env) putImage(im *sanbootv1.Image, mode sanbootv1.PutMode) (*sanbootv1.PutImageResponse, error) {
	return e.api.PutImage(e.ctx, &sanbootv1.PutImageRequest{Image: im, Mode: mode})
}

// placed creates node name on image and waits until the scheduler placed it.
func (e *env) placed(name, image string) *sanbootv1.Node {
	e.t.Helper()
	e.node(name, image)
	return e.waitNode(name, func(n *sanbootv1.Node) bool { return n.GetStatus().GetAgent() != "" })
}

// A snapshot is resolved by the API server: the node's agent, the size of
// its image and its image as parent, whatever the user sent.
func TestSnapshotResolution(t *testing.T) {
	e := start(t)
	e.image("default", "img") // 1 MiB
	e.agent("a", 10, "img")
	e.agent("b", 10, "img")

	_, err := e.putImage(snapshotImage("s0", "ghost"), create)
	wantCode(t, err, codes.FailedPrecondition, `node "ghost" does not exist`)

	pinned := newNode("pinned", "img")
	pinned.Spec.Agent = "nowhere"
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: pinned}); err != nil {
		t.Fatal(err)
	}
	e.waitNode("pinned", func(n *sanbootv1.Node) bool { return n.GetStatus().GetMessage() != "waiting for the scheduler" })
	_, err = e.putImage(snapshotImage("s0", "pinned"), create)
	wantCode(t, err, codes.FailedPrecondition, "not placed on an agent yet", `"nowhere"`, "no disk to snapshot")

	n := e.placed("n1", "img")
	im := snapshotImage("s1", "n1")
	im.Spec.SizeBytes, im.Spec.Agents, im.Spec.Parent = 4096, []string{"b", "c"}, "forged"
	resp, err := e.putImage(im, create)
	if err != nil {
		t.Fatal(err)
	}
	got := resp.GetImage().GetSpec()
	if got.GetSizeBytes() != 1<<20 || !slices.Equal(got.GetAgents(), []string{n.Status.Agent}) || got.GetParent() != "img" {
		t.Fatalf("snapshot spec = %v, want size 1MiB, agents [%s], parent img", got, n.Status.Agent)
	}
	if resp.Result != sanbootv1.PutResult_PUT_RESULT_CREATED {
		t.Errorf("result %v", resp.Result)
	}
	// Again: unchanged (what the user sends for the resolved fields does not count).
	resp, err = e.putImage(snapshotImage("s1", "n1"), create)
	if err != nil || resp.Result != sanbootv1.PutResult_PUT_RESULT_UNCHANGED {
		t.Fatalf("second create = %v, %v; want unchanged", resp.GetResult(), err)
	}

	// Users cannot set a parent on other images.
	forged := &sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Name: "plain"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 512, Parent: "img"}}
	resp, err = e.putImage(forged, create)
	if err != nil || resp.GetImage().GetSpec().GetParent() != "" {
		t.Fatalf("plain image = %v, %v; want no parent", resp.GetImage().GetSpec(), err)
	}

	// A node being deleted cannot be snapshotted; the snapshot made before
	// outlives it and can still be applied.
	if _, err := e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.putImage(snapshotImage("s2", "n1"), create)
	wantCode(t, err, codes.FailedPrecondition, `node "n1" in project "default" is being deleted`)
	relabel := snapshotImage("s1", "n1")
	relabel.Metadata.Labels = map[string]string{"keep": "yes"}
	resp, err = e.putImage(relabel, apply)
	if err != nil || resp.Result != sanbootv1.PutResult_PUT_RESULT_CONFIGURED ||
		!proto.Equal(resp.GetImage().GetSpec(), got) {
		t.Fatalf("relabel = %v %v, %v; want configured with spec %v", resp.GetResult(), resp.GetImage().GetSpec(), err, got)
	}
}

// A copy takes the source's size, agents and parent; it may grow, never
// shrink, and is never a copy of itself or of nothing.
func TestCopyResolution(t *testing.T) {
	e := start(t)
	src := &sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Name: "src"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20, Agents: []string{"a", "b"}}}
	if _, err := e.putImage(src, create); err != nil {
		t.Fatal(err)
	}
	_, err := e.putImage(copyImage("dst", "ghost"), create)
	wantCode(t, err, codes.FailedPrecondition, `image "ghost" does not exist`)
	_, err = e.putImage(copyImage("src", "src"), apply)
	wantCode(t, err, codes.InvalidArgument, "copy of itself")
	small := copyImage("dst", "src")
	small.Spec.SizeBytes = 512
	_, err = e.putImage(small, create)
	wantCode(t, err, codes.InvalidArgument, "never shrink")

	resp, err := e.putImage(copyImage("dst", "src"), create)
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.GetImage().GetSpec(); s.GetSizeBytes() != 1<<20 || !slices.Equal(s.GetAgents(), []string{"a", "b"}) || s.GetParent() != "" {
		t.Fatalf("copy spec = %v", s)
	}
	big := copyImage("big", "src")
	big.Spec.SizeBytes = 2 << 20
	if resp, err := e.putImage(big, create); err != nil || resp.GetImage().GetSpec().GetSizeBytes() != 2<<20 {
		t.Fatalf("grown copy = %v, %v", resp.GetImage().GetSpec(), err)
	}

	// A copy of a snapshot has the snapshot's parent.
	e.agent("a", 10, "src")
	e.placed("n1", "src")
	if _, err := e.putImage(snapshotImage("snap", "n1"), create); err != nil {
		t.Fatal(err)
	}
	resp, err = e.putImage(copyImage("snap-copy", "snap"), create)
	if err != nil || resp.GetImage().GetSpec().GetParent() != "src" || !slices.Equal(resp.GetImage().GetSpec().GetAgents(), []string{"a"}) {
		t.Fatalf("copy of a snapshot = %v, %v; want parent src, agents [a]", resp.GetImage().GetSpec(), err)
	}
}

// image rm names the nodes and the snapshots that depend on an image.
func TestDeleteImageRefusesWhileSnapshotsDependOnIt(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	e.agent("a", 10, "img")
	e.placed("n1", "img")
	for _, name := range []string{"s2", "s1"} {
		if _, err := e.putImage(snapshotImage(name, "n1"), create); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.api.DeleteImage(e.ctx, &sanbootv1.DeleteRequest{Name: "img"})
	wantCode(t, err, codes.FailedPrecondition, "used by nodes n1 and by snapshots s1, s2: delete them first")

	// Without the node, the snapshots still hold it.
	if _, err := e.cli.Delete(e.ctx, api.NodeKey("default", "n1")); err != nil { // as the scheduler finishes a deletion
		t.Fatal(err)
	}
	_, err = e.api.DeleteImage(e.ctx, &sanbootv1.DeleteRequest{Name: "img"})
	wantCode(t, err, codes.FailedPrecondition, "used by snapshots s1, s2")
	for _, name := range []string{"s1", "s2", "img"} {
		if _, err := e.api.DeleteImage(e.ctx, &sanbootv1.DeleteRequest{Name: name}); err != nil {
			t.Fatalf("delete %s: %v", name, err)
		}
	}
}

// A snapshot taken while its node is marked deleting: either the snapshot
// was written first, or it is refused.
func TestSnapshotRacesDeleteNode(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	e.agent("a", 10, "img")
	for i := range 10 {
		node, snap := fmt.Sprintf("n%d", i), fmt.Sprintf("s%d", i)
		e.placed(node, "img")
		var marked *sanbootv1.Node
		var wg sync.WaitGroup
		wg.Go(func() {
			n, err := e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: node})
			if err != nil {
				t.Errorf("delete %s: %v", node, err)
			}
			marked = n
		})
		wg.Go(func() { e.putImage(snapshotImage(snap, node), create) })
		wg.Wait()
		im, err := e.api.GetImage(e.ctx, &sanbootv1.GetRequest{Name: snap})
		if err != nil {
			wantCode(t, err, codes.NotFound)
			continue
		}
		if im.Metadata.Revision >= marked.GetMetadata().GetRevision() {
			t.Fatalf("round %d: snapshot written at %d, after its node was marked deleting at %d", i, im.Metadata.Revision, marked.GetMetadata().GetRevision())
		}
	}
}

// Deleting a parent while a snapshot of it is copied and deleted: never an
// image whose parent is gone.
func TestDeleteImageRacesCopyOfSnapshot(t *testing.T) {
	e := start(t)
	for i := range 20 {
		parent, snap, cp := fmt.Sprintf("p%d", i), fmt.Sprintf("s%d", i), fmt.Sprintf("c%d", i)
		e.image("default", parent)
		// A snapshot record as the API server writes it, of a node long gone.
		s := snapshotImage(snap, "gone")
		s.Metadata = &sanbootv1.ObjectMeta{Project: "default", Name: snap, Generation: 1}
		s.Spec.SizeBytes, s.Spec.Agents, s.Spec.Parent = 1<<20, []string{"a"}, parent
		if _, err := e.cli.Put(e.ctx, api.ImageKey("default", snap), mustMarshal(t, s)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		others := make(chan struct{})
		wg.Go(func() { e.api.DeleteImage(e.ctx, &sanbootv1.DeleteRequest{Name: snap}) })
		wg.Go(func() { e.putImage(copyImage(cp, snap), create) })
		go func() { wg.Wait(); close(others) }()
		var parentGone bool
	loop:
		for {
			_, err := e.api.DeleteImage(e.ctx, &sanbootv1.DeleteRequest{Name: parent})
			if err == nil {
				parentGone = true
				break
			}
			select {
			case <-others:
				break loop
			default:
			}
		}
		<-others
		list, err := e.api.ListImages(e.ctx, &sanbootv1.ListRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range list.Images {
			if parentGone && im.Spec.GetParent() == parent {
				t.Fatalf("round %d: image %s has parent %s, which was deleted", i, im.Metadata.Name, parent)
			}
		}
	}
}

// An image cannot go while a copy of it is still being made: the agents
// making the copy read it.
func TestDeleteImageRefusedWhileACopyIsPending(t *testing.T) {
	e := start(t)
	src := &sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Name: "src"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20, Agents: []string{"a"}}}
	if _, err := e.putImage(src, create); err != nil {
		t.Fatal(err)
	}
	a := e.agent("a", 10, "src")
	if _, err := e.putImage(copyImage("dst", "src"), create); err != nil {
		t.Fatal(err)
	}
	_, err := e.api.DeleteImage(e.ctx, &sanbootv1.DeleteRequest{Name: "src"})
	wantCode(t, err, codes.FailedPrecondition, "copies still being made dst")

	if err := a.SetReplica(e.ctx, api.DefaultProject, "dst", api.ReplicaReady); err != nil {
		t.Fatal(err)
	}
	if _, err := e.api.DeleteImage(e.ctx, &sanbootv1.DeleteRequest{Name: "src"}); err != nil {
		t.Fatalf("delete src once its copy is Ready: %v", err)
	}
}

// An image's EFI boot path is validated; snapshots and copies that name
// none inherit the one of the image they come from.
func TestEFIBootPathIsInherited(t *testing.T) {
	e := start(t)
	const shim = `\EFI\debian\shimx64.efi`
	bad := &sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Name: "bad"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20, EfiBootPath: `EFI/BOOT/BOOTX64.EFI`}}
	_, err := e.putImage(bad, create)
	wantCode(t, err, codes.InvalidArgument, "spec.efiBootPath")
	src := &sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Name: "src"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20, EfiBootPath: shim}}
	if _, err := e.putImage(src, create); err != nil {
		t.Fatal(err)
	}
	e.agent("a", 10, "src")
	e.placed("n1", "src")
	for _, tc := range []struct {
		im   *sanbootv1.Image
		path string
	}{
		{snapshotImage("snap", "n1"), shim},
		{copyImage("copy", "src"), shim},
		{copyImage("copy-of-snap", "snap"), shim},
		{func() *sanbootv1.Image {
			im := snapshotImage("own", "n1")
			im.Spec.EfiBootPath = `\EFI\BOOT\grubx64.efi`
			return im
		}(), `\EFI\BOOT\grubx64.efi`},
	} {
		resp, err := e.putImage(tc.im, create)
		if err != nil || resp.GetImage().GetSpec().GetEfiBootPath() != tc.path {
			t.Errorf("%s: spec = %v, %v; want efiBootPath %s", tc.im.Metadata.Name, resp.GetImage().GetSpec(), err, tc.path)
		}
	}
	// Applying the snapshot's manifest again (without the path) keeps it.
	resp, err := e.putImage(snapshotImage("snap", "n1"), apply)
	if err != nil || resp.GetResult() != sanbootv1.PutResult_PUT_RESULT_UNCHANGED || resp.GetImage().GetSpec().GetEfiBootPath() != shim {
		t.Errorf("snapshot applied again = %v %v, %v; want unchanged with efiBootPath %s", resp.GetResult(), resp.GetImage().GetSpec(), err, shim)
	}
}

package integration_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/eventually"
)

const imageSize = 4 << 20

func (c *system) putImage(im *sanbootv1.Image) *sanbootv1.Image {
	c.t.Helper()
	resp, err := c.api.PutImage(c.ctx, &sanbootv1.PutImageRequest{Image: im, Mode: sanbootv1.PutMode_PUT_MODE_CREATE})
	if err != nil {
		c.t.Fatalf("PutImage %s: %v", im.GetMetadata().GetName(), err)
	}
	return resp.GetImage()
}

func (c *system) provision(name, image string) {
	c.t.Helper()
	n := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Name: name}, Spec: &sanbootv1.NodeSpec{Image: image}}
	if _, err := c.api.PutNode(c.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
		c.t.Fatalf("PutNode %s: %v", name, err)
	}
	c.waitNode(name, "Ready", func(n *sanbootv1.Node, err error) bool {
		return err == nil && n.GetStatus().GetPhase() == api.PhaseReady
	})
}

func (c *system) waitNode(name, what string, ok func(*sanbootv1.Node, error) bool) {
	c.t.Helper()
	var n *sanbootv1.Node
	var err error
	eventually.True(c.t, "node "+name+" "+what, func() bool {
		n, err = c.api.GetNode(c.ctx, &sanbootv1.GetRequest{Name: name})
		return ok(n, err)
	}, eventually.Seen(func() string { return n.GetStatus().String() + " " + errString(err) }))
}

func (c *system) waitImageReady(name string) *sanbootv1.Image {
	c.t.Helper()
	var im *sanbootv1.Image
	var err error
	eventually.True(c.t, "image "+name+" Ready", func() bool {
		im, err = c.api.GetImage(c.ctx, &sanbootv1.GetRequest{Name: name})
		return err == nil && im.GetStatus().GetPhase() == api.ReplicaReady
	}, eventually.Seen(func() string { return im.GetStatus().String() + " " + errString(err) }))
	return im
}

func (c *system) diskPath(node string) string {
	return filepath.Join(c.store, "disks", api.DefaultProject, node+".raw")
}

func (c *system) imagePath(image string) string {
	return filepath.Join(c.store, "images", api.DefaultProject, image+".raw")
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

// A node's disk, snapshotted, provisions a second node with the same
// bytes; deleting the first node leaves the snapshot and the second node
// intact.
func TestSnapshotProvisionsAndOutlivesItsNode(t *testing.T) {
	c := start(t)
	c.putImage(&sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Name: "golden"}, Spec: &sanbootv1.ImageSpec{SizeBytes: imageSize}})
	c.waitImageReady("golden")
	c.provision("n1", "golden")

	// What the machine wrote through its target: bytes in its disk file,
	// not fsynced (the snapshot does that).
	payload := []byte("written by n1 before the snapshot\x00\x01\x02\xff")
	const off = 1<<20 + 17
	f, err := os.OpenFile(c.diskPath("n1"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	snap := c.putImage(&sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "s1"},
		Spec:     &sanbootv1.ImageSpec{Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: "n1"}}}},
	})
	if s := snap.GetSpec(); s.GetSizeBytes() != imageSize || s.GetParent() != "golden" || len(s.GetAgents()) != 1 || s.GetAgents()[0] != "a1" {
		t.Fatalf("snapshot spec = %v", s)
	}
	c.waitImageReady("s1")
	c.provision("n2", "s1")
	if got := readAt(t, c.diskPath("n2"), off, len(payload)); !bytes.Equal(got, payload) {
		t.Fatalf("n2's disk holds %q at %d, want %q", got, off, payload)
	}

	// Writes after the snapshot stay on n1's disk.
	f, err = os.OpenFile(c.diskPath("n1"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("later"), off); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The parent cannot go while the snapshot exists; the snapshot cannot
	// go while n2 uses it.
	_, err = c.api.DeleteImage(c.ctx, &sanbootv1.DeleteRequest{Name: "golden"})
	wantCode(t, err, codes.FailedPrecondition, "used by nodes n1 and by snapshots s1")
	_, err = c.api.DeleteImage(c.ctx, &sanbootv1.DeleteRequest{Name: "s1"})
	wantCode(t, err, codes.FailedPrecondition, "used by nodes n2")

	if _, err := c.api.DeleteNode(c.ctx, &sanbootv1.DeleteRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	c.waitNode("n1", "gone", func(_ *sanbootv1.Node, err error) bool { return status.Code(err) == codes.NotFound })
	if _, err := os.Stat(c.diskPath("n1")); !os.IsNotExist(err) {
		t.Errorf("n1's disk after its deletion: %v", err)
	}

	im := c.waitImageReady("s1")
	if im.GetSpec().GetParent() != "golden" {
		t.Errorf("snapshot after its node's deletion = %v", im)
	}
	for _, path := range []string{c.imagePath("s1"), c.diskPath("n2")} {
		if got := readAt(t, path, off, len(payload)); !bytes.Equal(got, payload) {
			t.Errorf("%s holds %q at %d after n1's deletion, want %q", path, got, off, payload)
		}
	}
	n2, err := c.api.GetNode(c.ctx, &sanbootv1.GetRequest{Name: "n2"})
	if err != nil || n2.GetStatus().GetPhase() != api.PhaseReady {
		t.Errorf("n2 after n1's deletion = %v, %v", n2.GetStatus(), err)
	}
	_, err = c.api.DeleteImage(c.ctx, &sanbootv1.DeleteRequest{Name: "golden"})
	wantCode(t, err, codes.FailedPrecondition, "used by snapshots s1")
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func wantCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("error = %v, want code %v", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Fatalf("error message %q lacks %q", st.Message(), p)
		}
	}
}

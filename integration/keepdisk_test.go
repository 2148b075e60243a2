package integration_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
)

// A node deleted with keep_disk leaves an image Ready with its disk's
// bytes, made by its agent before it deleted the disk file.
func TestDeleteKeepDiskMakesAnImage(t *testing.T) {
	c := start(t)
	c.putImage(&sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Name: "golden"}, Spec: &sanbootv1.ImageSpec{SizeBytes: imageSize}})
	c.waitImageReady("golden")
	c.provision("n1", "golden")

	payload := []byte("written by n1 before its deletion\x00\xfe")
	const off = 2<<20 + 3
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

	n, err := c.api.DeleteNode(c.ctx, &sanbootv1.DeleteRequest{Name: "n1", KeepDisk: true})
	if err != nil {
		t.Fatal(err)
	}
	rest, ok := strings.CutPrefix(n.GetStatus().GetMessage(), apiserver.KeptDiskPrefix)
	if !ok {
		t.Fatalf("DeleteNode message %q names no kept image", n.GetStatus().GetMessage())
	}
	name, _, _ := strings.Cut(rest, "; ")
	c.waitNode("n1", "gone", func(_ *sanbootv1.Node, err error) bool { return status.Code(err) == codes.NotFound })
	im := c.waitImageReady(name)
	if im.GetSpec().GetParent() != "golden" || im.GetSpec().GetSource().GetSnapshot().GetNode() != "n1" {
		t.Errorf("kept image = %v", im.GetSpec())
	}
	if got := readAt(t, c.imagePath(name), off, len(payload)); !bytes.Equal(got, payload) {
		t.Errorf("image %s holds %q at %d, want %q", name, got, off, payload)
	}
	if _, err := os.Stat(c.diskPath("n1")); !os.IsNotExist(err) {
		t.Errorf("n1's disk file after its deletion: %v", err)
	}
}

package apiserver_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// rawCodec sends bytes as they are, to put what a Go client cannot (invalid
// UTF-8) on the wire; it decodes answers as protobuf.
type rawCodec struct{ encoding.CodecV2 }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func TestHostileRequestsGetInvalidArgument(t *testing.T) {
	e := start(t)
	e.image("default", "img")

	// Invalid UTF-8 in a string field.
	b, err := proto.Marshal(&sanbootv1.PutNodeRequest{Node: withMACs(newNode("zzzz", "img"), "default")})
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("zzzz"), []byte{0xff, 0xfe, 0xfd, 0xfc}, 1)
	err = e.conn.Invoke(e.ctx, "/sanboot.v1.Sanboot/PutNode", b, &sanbootv1.PutNodeResponse{},
		grpc.ForceCodecV2(rawCodec{encoding.GetCodecV2("proto")}))
	wantCode(t, err, codes.InvalidArgument, "UTF-8")

	// An unknown PutMode is not APPLY.
	_, err = e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: newNode("n1", "img"), Mode: 99})
	wantCode(t, err, codes.InvalidArgument, "99 is not a PutMode")
	_, err = e.api.PutImage(e.ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "i2"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}, Mode: -3})
	wantCode(t, err, codes.InvalidArgument, "is not a PutMode")

	// Revision -1 is a mistake, not a conflict.
	n := newNode("n1", "img")
	n.Metadata.Revision = -1
	_, err = e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n})
	wantCode(t, err, codes.InvalidArgument, "metadata.revision", "negative")
	_, err = e.api.DeleteNode(e.ctx, &sanbootv1.DeleteRequest{Name: "n1", Revision: -1})
	wantCode(t, err, codes.InvalidArgument, "negative")
	_, err = e.api.DeleteImage(e.ctx, &sanbootv1.DeleteRequest{Name: "img", Revision: -1})
	wantCode(t, err, codes.InvalidArgument, "negative")

	// A 1 MB value is not repeated in the answer.
	_, err = e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: newNode(strings.Repeat("x", 1<<20), "img")})
	wantCode(t, err, codes.InvalidArgument, "metadata.name", "(1048576 bytes)")
	if len(err.Error()) > 4096 {
		t.Errorf("the error repeats the input: %d bytes", len(err.Error()))
	}

	// 1,000 MACs, 1,000 agents: refused by their count, in a short message.
	macs := make([]string, 1000)
	for i := range macs {
		macs[i] = fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256)
	}
	_, err = e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("n1", "img"), "default", macs...)})
	wantCode(t, err, codes.InvalidArgument, "spec.macs: has 1000 MACs; at most 16")
	agents := make([]string, 1000)
	for i := range agents {
		agents[i] = fmt.Sprintf("a%d", i)
	}
	_, err = e.api.PutImage(e.ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "i3"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20, Agents: agents}}})
	wantCode(t, err, codes.InvalidArgument, "spec.agents: has 1000 agents; at most 64")
	if len(err.Error()) > 4096 {
		t.Errorf("the error lists every agent: %d bytes", len(err.Error()))
	}
}

package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// fakeImageIO is the FAKE API's side of uploads and exports: uploads are
// kept in memory (no staging, no qcow2), exports serve bytes a test sets.
type fakeImageIO struct {
	uploads map[string][]byte
	// exports are the bytes ExportImage serves, by project/name.
	exports map[string][]byte
	// exportCut ends every export with Unavailable after that many bytes
	// (0: never); exportFlip damages one byte of every export.
	exportCut  int
	exportFlip bool
}

const fakeMember = "cp1"

func fakeSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (f *fakeSanboot) UploadImage(stream grpc.ClientStreamingServer[sanbootv1.UploadImageRequest, sanbootv1.UploadImageResponse]) error {
	f.mu.Lock()
	f.count("UploadImage")
	f.mu.Unlock()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "fake: the header comes first")
	}
	var data []byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		data = append(data, msg.GetChunk()...)
	}
	if h.GetSizeBytes() != 0 && int64(len(data)) != h.GetSizeBytes() {
		return status.Errorf(codes.InvalidArgument, "fake: received %d bytes, the upload announced %d", len(data), h.GetSizeBytes())
	}
	sum := fakeSum(data)
	if h.GetSha256() != "" && h.GetSha256() != sum {
		return status.Errorf(codes.InvalidArgument, "fake: the bytes received have sha256 %s, the upload announced %s", sum, h.GetSha256())
	}
	f.mu.Lock()
	if f.io.uploads == nil {
		f.io.uploads = map[string][]byte{}
	}
	id := fmt.Sprintf("%032x", len(f.io.uploads)+1)
	f.io.uploads[id] = data
	f.mu.Unlock()
	return stream.SendAndClose(&sanbootv1.UploadImageResponse{UploadId: id, Sha256: sum, SizeBytes: int64(len(data)), Member: fakeMember, Format: "raw"})
}

func (f *fakeSanboot) ExportImage(req *sanbootv1.GetRequest, stream grpc.ServerStreamingServer[sanbootv1.Chunk]) error {
	f.mu.Lock()
	f.count("ExportImage")
	data, ok := f.io.exports[key(req.GetProject(), req.GetName())]
	cut, flip := f.io.exportCut, f.io.exportFlip
	f.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "fake: no bytes for image %q", req.GetName())
	}
	if flip {
		data = append([]byte(nil), data...)
		data[len(data)/2] ^= 1
	}
	for off := 0; off < len(data); off += 64 << 10 {
		if cut > 0 && off >= cut {
			return status.Error(codes.Unavailable, "fake: the agent's push broke")
		}
		if err := stream.Send(&sanbootv1.Chunk{Data: data[off:min(off+64<<10, len(data))]}); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeSanboot) upload(id string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.io.uploads[id]
}

func (f *fakeSanboot) setExport(project, name string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.io.exports == nil {
		f.io.exports = map[string][]byte{}
	}
	f.io.exports[key(project, name)] = data
}

// setImageStatus plays the agents: it replaces an image's status.
func (f *fakeSanboot) setImageStatus(project, name string, st *sanbootv1.ImageStatus) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	im, ok := f.images[key(project, name)]
	if ok {
		im.Status = st
	}
	return ok
}

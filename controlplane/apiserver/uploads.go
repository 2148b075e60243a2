package apiserver

import (
	"context"
	"errors"
	"io"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/staging"
)

// ChunkSize is the most image bytes the server puts in one message
// (gRPC's default limit for a received message is 4 MiB).
const ChunkSize = 1 << 20

// UploadImage stages the bytes a client streams (a header, then chunks)
// on this member, in Config.Uploads: written to a temp file, fsynced,
// checked against the header's size and sha256, converted to raw when it
// is qcow2, hashed, renamed to a new upload id. A broken stream leaves
// nothing. The answer names the upload, its raw size and sha256, and this
// member: PutImage with that UploadSource makes the agents fetch it with
// ReadUpload.
func (s *Server) UploadImage(stream sanbootv1.Sanboot_UploadImageServer) error {
	if err := s.canStage(); err != nil {
		return err
	}
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return recvError(ctx, err, "the upload's header")
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "an upload starts with a header (project, size, sha256), then chunks")
	}
	project := api.ProjectOrDefault(h.GetProject())
	var errs []error
	errs = append(errs, api.ValidateName("header.project", project))
	if size := h.GetSizeBytes(); size < 0 || size > api.MaxImageSize {
		errs = append(errs, &api.FieldError{Field: "header.sizeBytes", Value: strconv.FormatInt(size, 10), Msg: "must be 0 (unknown) up to 64 TiB"})
	}
	if sum := h.GetSha256(); sum != "" && (len(sum) != 64 || !isLowerHex(sum)) {
		errs = append(errs, &api.FieldError{Field: "header.sha256", Value: sum, Msg: "must be empty or 64 lowercase hex digits"})
	}
	if err := errors.Join(errs...); err != nil {
		return invalid(err)
	}
	limit := h.GetSizeBytes()
	if limit == 0 {
		limit = api.MaxImageSize
	}
	w, err := s.cfg.Uploads.Create(h.GetSizeBytes())
	if err != nil {
		return stagingError(ctx, err)
	}
	defer w.Abort()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.log.Info("upload interrupted; nothing is kept", "project", project, "received", w.Written(), "err", err)
			return recvError(ctx, err, "the upload")
		}
		data := msg.GetChunk()
		if msg.GetHeader() != nil {
			return status.Error(codes.InvalidArgument, "an upload has one header, first")
		}
		if w.Written()+int64(len(data)) > limit {
			return status.Errorf(codes.InvalidArgument, "the upload sends more than the %d bytes it announced (or than 64 TiB)", limit)
		}
		if _, err := w.Write(data); err != nil {
			return stagingError(ctx, err)
		}
	}
	res, err := w.Commit(ctx, h.GetSizeBytes(), h.GetSha256())
	if err != nil {
		return stagingError(ctx, err)
	}
	return stream.SendAndClose(&sanbootv1.UploadImageResponse{
		UploadId: res.ID, Sha256: res.SHA256, SizeBytes: res.Size, Member: s.cfg.Member, Format: res.Format,
	})
}

// ReadUpload streams a staged upload from req.offset on, for agents. A
// reader whose stream breaks asks again from the offset it reached.
func (s *Server) ReadUpload(req *sanbootv1.ReadUploadRequest, stream sanbootv1.AgentData_ReadUploadServer) error {
	if err := s.canStage(); err != nil {
		return err
	}
	ctx := stream.Context()
	f, err := s.cfg.Uploads.Open(req.GetUploadId())
	if errors.Is(err, staging.ErrNotFound) {
		return status.Errorf(codes.NotFound, "upload %q is not staged on control-plane member %q: it was garbage-collected "+
			"(every wanted replica was Ready, or no image referred to it in time) or staged elsewhere: import the image again",
			req.GetUploadId(), s.cfg.Member)
	}
	if err != nil {
		return stagingError(ctx, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return status.Errorf(codes.Internal, "stat upload %s: %v", req.GetUploadId(), err)
	}
	off := req.GetOffset()
	if off < 0 || off > fi.Size() {
		return status.Errorf(codes.OutOfRange, "offset %d is outside upload %s of %d bytes", off, req.GetUploadId(), fi.Size())
	}
	buf := make([]byte, ChunkSize)
	for off < fi.Size() {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), fi.Size()-off)], off)
		if n > 0 {
			if err := stream.Send(&sanbootv1.Chunk{Data: buf[:n]}); err != nil {
				return err
			}
			off += int64(n)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return status.Errorf(codes.Internal, "read upload %s at %d: %v", req.GetUploadId(), off, err)
		}
		if err != nil { // EOF before the size: the file shrank
			return status.Errorf(codes.DataLoss, "upload %s ended at %d bytes, before its size %d", req.GetUploadId(), off, fi.Size())
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil
}

func (s *Server) canStage() error {
	if s.cfg.Uploads == nil || s.cfg.Member == "" {
		return status.Error(codes.FailedPrecondition, "this control-plane member stages no uploads (it was started without a data directory for them)")
	}
	return nil
}

// stagingError maps the errors of package staging to gRPC statuses.
func stagingError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, staging.ErrNoSpace):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, staging.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, staging.ErrNoQemuImg):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, staging.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// recvError is the status of a client stream that broke.
func recvError(ctx context.Context, err error, what string) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "receive %s: %v", what, err)
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

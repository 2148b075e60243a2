package apiserver

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// gRPC turns any error of its codec into Internal, before an interceptor
// runs. A request whose strings are not valid UTF-8 is the client's
// mistake, so the server's codec lets it through undecoded and remembers
// it, and the interceptors answer InvalidArgument before any handler sees
// the message.
type strictCodec struct {
	encoding.CodecV2
	bad sync.Map // message -> its decoding error
}

func newStrictCodec() *strictCodec {
	return &strictCodec{CodecV2: encoding.GetCodecV2("proto")}
}

func (c *strictCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err != nil && strings.Contains(err.Error(), "invalid UTF-8") {
		c.bad.Store(v, err)
		return nil
	}
	return err
}

// refused returns InvalidArgument for a message the codec let through.
func (c *strictCodec) refused(v any) error {
	if _, ok := c.bad.LoadAndDelete(v); ok {
		return status.Error(codes.InvalidArgument, "the request holds a string that is not valid UTF-8: every string field must be UTF-8")
	}
	return nil
}

func (c *strictCodec) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := c.refused(req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (c *strictCodec) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, &strictStream{ServerStream: ss, c: c})
}

type strictStream struct {
	grpc.ServerStream
	c *strictCodec
}

func (s *strictStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.c.refused(m)
}

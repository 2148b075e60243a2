package client

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// readYourWrites remembers the highest revision of the objects this client
// wrote, and asks every watch it opens for a view at least that new
// (min_revision): a wait after a write never answers from a member whose
// cache has not seen the write yet, whatever member it reaches and however
// many objects were written.
type readYourWrites struct {
	sanbootv1.SanbootClient
	rev atomic.Int64
}

func (c *readYourWrites) saw(rev int64) {
	for {
		cur := c.rev.Load()
		if rev <= cur || c.rev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

func (c *readYourWrites) PutNode(ctx context.Context, req *sanbootv1.PutNodeRequest, opts ...grpc.CallOption) (*sanbootv1.PutNodeResponse, error) {
	resp, err := c.SanbootClient.PutNode(ctx, req, opts...)
	if err == nil && !req.GetDryRun() {
		c.saw(resp.GetNode().GetMetadata().GetRevision())
	}
	return resp, err
}

func (c *readYourWrites) PutNodes(ctx context.Context, req *sanbootv1.PutNodesRequest, opts ...grpc.CallOption) (*sanbootv1.PutNodesResponse, error) {
	resp, err := c.SanbootClient.PutNodes(ctx, req, opts...)
	if err == nil && !req.GetDryRun() {
		for _, r := range resp.GetResults() {
			c.saw(r.GetNode().GetMetadata().GetRevision())
		}
	}
	return resp, err
}

func (c *readYourWrites) PutImage(ctx context.Context, req *sanbootv1.PutImageRequest, opts ...grpc.CallOption) (*sanbootv1.PutImageResponse, error) {
	resp, err := c.SanbootClient.PutImage(ctx, req, opts...)
	if err == nil && !req.GetDryRun() {
		c.saw(resp.GetImage().GetMetadata().GetRevision())
	}
	return resp, err
}

func (c *readYourWrites) DeleteNode(ctx context.Context, req *sanbootv1.DeleteRequest, opts ...grpc.CallOption) (*sanbootv1.Node, error) {
	n, err := c.SanbootClient.DeleteNode(ctx, req, opts...)
	if err == nil {
		c.saw(n.GetMetadata().GetRevision())
	}
	return n, err
}

func (c *readYourWrites) WatchNodes(ctx context.Context, req *sanbootv1.WatchNodesRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[sanbootv1.NodeEvent], error) {
	if rev := c.rev.Load(); rev > req.GetMinRevision() {
		req = proto.CloneOf(req)
		req.MinRevision = rev
	}
	return c.SanbootClient.WatchNodes(ctx, req, opts...)
}

func (c *readYourWrites) WatchImages(ctx context.Context, req *sanbootv1.WatchImagesRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[sanbootv1.ImageEvent], error) {
	if rev := c.rev.Load(); rev > req.GetMinRevision() {
		req = proto.CloneOf(req)
		req.MinRevision = rev
	}
	return c.SanbootClient.WatchImages(ctx, req, opts...)
}

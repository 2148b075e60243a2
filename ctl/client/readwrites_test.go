package client

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// revisionSanboot is a FAKE API: writes answer with the revision the test
// sets, watches record the min_revision they were asked for and end.
type revisionSanboot struct {
	sanbootv1.UnimplementedSanbootServer
	mu      sync.Mutex
	next    int64
	watched []int64
}

func (f *revisionSanboot) rev() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.next
}

func (f *revisionSanboot) PutNode(_ context.Context, req *sanbootv1.PutNodeRequest) (*sanbootv1.PutNodeResponse, error) {
	return &sanbootv1.PutNodeResponse{Node: &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Name: req.GetNode().GetMetadata().GetName(), Revision: f.rev()}}}, nil
}

func (f *revisionSanboot) PutNodes(_ context.Context, req *sanbootv1.PutNodesRequest) (*sanbootv1.PutNodesResponse, error) {
	resp := &sanbootv1.PutNodesResponse{}
	for range req.GetNodes() {
		resp.Results = append(resp.Results, &sanbootv1.PutNodesResult{Node: &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Revision: f.rev()}}})
	}
	return resp, nil
}

func (f *revisionSanboot) PutImage(_ context.Context, req *sanbootv1.PutImageRequest) (*sanbootv1.PutImageResponse, error) {
	return &sanbootv1.PutImageResponse{Image: &sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Revision: f.rev()}}}, nil
}

func (f *revisionSanboot) DeleteNode(context.Context, *sanbootv1.DeleteRequest) (*sanbootv1.Node, error) {
	return &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Revision: f.rev()}}, nil
}

func (f *revisionSanboot) WatchNodes(req *sanbootv1.WatchNodesRequest, _ grpc.ServerStreamingServer[sanbootv1.NodeEvent]) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watched = append(f.watched, req.GetMinRevision())
	return nil
}

func (f *revisionSanboot) WatchImages(req *sanbootv1.WatchImagesRequest, _ grpc.ServerStreamingServer[sanbootv1.ImageEvent]) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watched = append(f.watched, req.GetMinRevision())
	return nil
}

// Every watch asks for the highest revision the client's writes (not its
// dry runs) returned, and never less than its caller asked for.
func TestWatchesReadTheClientsWrites(t *testing.T) {
	f := &revisionSanboot{}
	c, err := New(Options{Endpoints: []string{serve(t, f)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	set := func(rev int64) {
		f.mu.Lock()
		f.next = rev
		f.mu.Unlock()
	}
	watchNodes := func(min int64) {
		t.Helper()
		s, err := c.WatchNodes(ctx, &sanbootv1.WatchNodesRequest{MinRevision: min})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = s.Recv() // the fake ends the stream
	}
	watchImages := func() {
		t.Helper()
		s, err := c.WatchImages(ctx, &sanbootv1.WatchImagesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = s.Recv()
	}
	node := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Name: "n"}}
	call := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	watchNodes(0) // nothing written: etcd's revision (0)
	set(10)
	_, err = c.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: node})
	call(err)
	set(30)
	_, err = c.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: node, DryRun: true})
	call(err)
	watchNodes(0)  // 10: the dry run wrote nothing
	watchNodes(20) // the caller's own, higher
	set(5)         // an older answer does not lower it
	_, err = c.PutImage(ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{}})
	call(err)
	watchImages()
	set(40)
	_, err = c.DeleteNode(ctx, &sanbootv1.DeleteRequest{Name: "n"})
	call(err)
	watchImages()
	set(50)
	_, err = c.PutNodes(ctx, &sanbootv1.PutNodesRequest{Nodes: []*sanbootv1.Node{node, node}})
	call(err)
	watchNodes(0)

	want := []int64{0, 10, 20, 10, 40, 50}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.watched) != len(want) {
		t.Fatalf("watches asked for %v, want %v", f.watched, want)
	}
	for i := range want {
		if f.watched[i] != want[i] {
			t.Fatalf("watches asked for %v, want %v", f.watched, want)
		}
	}
}

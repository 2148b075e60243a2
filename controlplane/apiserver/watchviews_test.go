package apiserver_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// objEvents reads a server stream into a channel for the tests.
type objEvents[E any] struct {
	t      testing.TB
	events chan *E
	errc   chan error
}

func recvAll[E any](t testing.TB, stream grpc.ServerStreamingClient[E]) *objEvents[E] {
	w := &objEvents[E]{t: t, events: make(chan *E, 100000), errc: make(chan error, 1)}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				w.errc <- err
				return
			}
			w.events <- ev
		}
	}()
	return w
}

// next returns the next event.
func (w *objEvents[E]) next() *E {
	w.t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case err := <-w.errc:
		w.t.Fatalf("watch ended: %v", err)
	case <-time.After(30 * time.Second):
		w.t.Fatal("timed out waiting for a watch event")
	}
	return nil
}

// until skips events until one satisfies ok, and returns it.
func (w *objEvents[E]) until(what string, ok func(*E) bool) *E {
	w.t.Helper()
	deadline := time.After(30 * time.Second)
	var last *E
	for {
		select {
		case ev := <-w.events:
			if ok(ev) {
				return ev
			}
			last = ev
		case err := <-w.errc:
			w.t.Fatalf("watch ended while waiting for %s: %v", what, err)
		case <-deadline:
			w.t.Fatalf("timed out waiting for %s; last event %v", what, last)
		}
	}
}

// WatchImages sends the selected images, SYNCED, then their replicas'
// progress, and DELETED when an image goes; images of other projects and
// other names are not sent.
func TestWatchImages(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	e.image("other", "elsewhere")
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	stream, err := e.api.WatchImages(ctx, &sanbootv1.WatchImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	w := recvAll(t, stream)
	var initial []string
	w.until("SYNCED", func(ev *sanbootv1.ImageEvent) bool {
		if ev.Type == sanbootv1.NodeEvent_TYPE_INITIAL {
			initial = append(initial, ev.Image.Metadata.Name)
		}
		return ev.Type == sanbootv1.NodeEvent_TYPE_SYNCED
	})
	if len(initial) != 1 || initial[0] != "img" {
		t.Fatalf("initial images = %v, want [img]", initial)
	}

	e.agent("a", 10, "img") // its replica of img is Ready
	w.until("img Ready", func(ev *sanbootv1.ImageEvent) bool {
		return ev.Type == sanbootv1.NodeEvent_TYPE_MODIFIED && ev.Image.Metadata.Name == "img" && ev.Image.Status.Phase == api.ReplicaReady
	})
	e.image("default", "img2")
	w.until("img2 ADDED", func(ev *sanbootv1.ImageEvent) bool {
		return ev.Type == sanbootv1.NodeEvent_TYPE_ADDED && ev.Image.Metadata.Name == "img2"
	})
	e.image("other", "elsewhere2")
	if _, err := e.api.DeleteImage(e.ctx, &sanbootv1.DeleteRequest{Name: "img2"}); err != nil {
		t.Fatal(err)
	}
	ev := w.until("img2 DELETED", func(ev *sanbootv1.ImageEvent) bool {
		return ev.Type == sanbootv1.NodeEvent_TYPE_DELETED || ev.Image.GetMetadata().GetProject() == "other"
	})
	if ev.Type != sanbootv1.NodeEvent_TYPE_DELETED || ev.Image.Metadata.Name != "img2" {
		t.Fatalf("event %v %v, want DELETED img2 (and nothing of project other)", ev.Type, ev.Image.Metadata)
	}

	named, err := e.api.WatchImages(ctx, &sanbootv1.WatchImagesRequest{Project: "other", Names: []string{"elsewhere2"}})
	if err != nil {
		t.Fatal(err)
	}
	nw := recvAll(t, named)
	first := nw.until("first event", func(*sanbootv1.ImageEvent) bool { return true })
	if first.Type != sanbootv1.NodeEvent_TYPE_INITIAL || first.Image.Metadata.Name != "elsewhere2" {
		t.Fatalf("first event = %v", first)
	}
	bad, err := e.api.WatchImages(ctx, &sanbootv1.WatchImagesRequest{Names: []string{"Not_A_Name"}})
	if err == nil {
		_, err = recvAll(t, bad).recvErr()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a bad name: %v, want InvalidArgument", err)
	}
}

func (w *objEvents[E]) recvErr() (*E, error) {
	select {
	case ev := <-w.events:
		return ev, nil
	case err := <-w.errc:
		return nil, err
	case <-time.After(30 * time.Second):
		w.t.Fatal("timed out waiting for the stream")
		return nil, nil
	}
}

// WatchAgents sends every agent, then its state changes and node counts.
func TestWatchAgents(t *testing.T) {
	e := start(t)
	e.image("default", "img")
	a := e.agent("a", 10, "img")
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	stream, err := e.api.WatchAgents(ctx, &sanbootv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	w := recvAll(t, stream)
	first := w.until("INITIAL a", func(*sanbootv1.AgentEvent) bool { return true })
	if first.Type != sanbootv1.NodeEvent_TYPE_INITIAL || first.Agent.Record.Name != "a" || first.Agent.State != api.AgentReady {
		t.Fatalf("first event = %v", first)
	}
	w.until("SYNCED", func(ev *sanbootv1.AgentEvent) bool { return ev.Type == sanbootv1.NodeEvent_TYPE_SYNCED })

	e.node("n1", "img")
	w.until("a has 1 node", func(ev *sanbootv1.AgentEvent) bool {
		return ev.Type == sanbootv1.NodeEvent_TYPE_MODIFIED && ev.Agent.Nodes == 1
	})
	if err := a.Revoke(e.ctx); err != nil {
		t.Fatal(err)
	}
	w.until("a Unavailable", func(ev *sanbootv1.AgentEvent) bool {
		return ev.Type == sanbootv1.NodeEvent_TYPE_MODIFIED && ev.Agent.State == api.AgentUnavailable
	})
	e.agent("b", 10)
	w.until("b ADDED", func(ev *sanbootv1.AgentEvent) bool {
		return ev.Type == sanbootv1.NodeEvent_TYPE_ADDED && ev.Agent.Record.Name == "b"
	})
}

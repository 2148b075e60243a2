package apiserver_test

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/internal/eventually"
)

// A watch that starts after a write sees that write in its initial events
// even when the API server's cache is held back: the server waits for its
// cache to reach the write's revision (min_revision), or, without one, the
// revision etcd is at, before it answers.
func TestWatchAfterWriteSeesItWhileCacheIsHeldBack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		minRev   bool // pass the write's revision
		watchFor string
	}{
		{"nodes, min_revision", true, "node"},
		{"nodes, etcd's revision", false, "node"},
		{"images, min_revision", true, "image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t)
			base := e.image("", "base").GetMetadata().GetRevision()
			eventually.True(t, "the cache to list", func() bool { return apiserver.CacheRevision(e.srv) >= base },
				eventually.Seen(func() string { return fmt.Sprint(apiserver.CacheRevision(e.srv)) }))
			e.hold.Pause()
			defer e.hold.Resume()
			before := apiserver.CacheRevision(e.srv)

			var rev int64
			name := "n1"
			if tc.watchFor == "node" {
				rev = e.node(name, "base").GetMetadata().GetRevision()
			} else {
				name = "im2"
				rev = e.image("", name).GetMetadata().GetRevision()
			}
			if rev <= before {
				t.Fatalf("write at revision %d, cache already at %d", rev, before)
			}
			if got := apiserver.CacheRevision(e.srv); got >= rev {
				t.Fatalf("the cache is at %d, not held back before %d", got, rev)
			}
			req := int64(0)
			if tc.minRev {
				req = rev
			}

			got := make(chan []string, 1)
			errc := make(chan error, 1)
			if tc.watchFor == "node" {
				w := e.watch(&sanbootv1.WatchNodesRequest{Names: []string{name}, MinRevision: req})
				go func() {
					var names []string
					for _, n := range w.initial() {
						names = append(names, n.GetMetadata().GetName())
					}
					got <- names
				}()
			} else {
				stream, err := e.api.WatchImages(e.ctx, &sanbootv1.WatchImagesRequest{Names: []string{name}, MinRevision: req})
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					var names []string
					for {
						ev, err := stream.Recv()
						if err != nil {
							errc <- err
							return
						}
						if ev.GetType() == sanbootv1.NodeEvent_TYPE_SYNCED {
							got <- names
							return
						}
						names = append(names, ev.GetImage().GetMetadata().GetName())
					}
				}()
			}
			// The watch waits for the cache rather than answer from it.
			eventually.True(t, "the watch to wait for the cache", func() bool { return apiserver.WatchesWaiting(e.srv) == 1 },
				eventually.Seen(func() string {
					select {
					case err := <-errc:
						return err.Error()
					case n := <-got:
						return fmt.Sprint("answered ", n)
					default:
						return "nothing waiting"
					}
				}))
			select {
			case names := <-got:
				t.Fatalf("the watch answered from a cache held back before the write: %v", names)
			case err := <-errc:
				t.Fatal(err)
			default:
			}
			e.hold.Resume()
			select {
			case names := <-got:
				if len(names) != 1 || names[0] != name {
					t.Fatalf("initial events name %v, want [%s]", names, name)
				}
			case err := <-errc:
				t.Fatal(err)
			}
		})
	}
}

// A min_revision beyond etcd's is refused rather than waited for forever.
func TestWatchRefusesRevisionFromTheFuture(t *testing.T) {
	e := start(t)
	rev := e.image("", "base").GetMetadata().GetRevision()
	w := e.watch(&sanbootv1.WatchNodesRequest{MinRevision: rev + 1000})
	select {
	case err := <-w.errc:
		wantCode(t, err, codes.OutOfRange, "ahead of etcd")
	case ev := <-w.events:
		t.Fatalf("got %v, want OutOfRange", ev)
	}
}

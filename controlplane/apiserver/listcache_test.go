package apiserver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/internal/eventually"
)

// A paged list is one revision however the nodes change between its
// pages: pages cut from the snapshot the first page took of the cache,
// and, when that snapshot is gone (more lists opened than a member keeps),
// pages read from etcd at the list's revision. Either way the pages add
// up to the unpaged list made before the changes.
func TestListPagesFromCacheStayAtOneRevision(t *testing.T) {
	for _, tc := range []struct {
		name     string
		req      *sanbootv1.ListRequest
		snapshot bool // false: evict the list's snapshot after its first page
	}{
		{"spec only, one project", &sanbootv1.ListRequest{PageSize: 3, SpecOnly: true}, true},
		{"views, one project", &sanbootv1.ListRequest{PageSize: 3}, true},
		{"views, all projects", &sanbootv1.ListRequest{AllProjects: true, PageSize: 3}, true},
		{"selector", &sanbootv1.ListRequest{LabelSelector: "rack=r1", PageSize: 1, SpecOnly: true}, true},
		{"spec only, snapshot gone", &sanbootv1.ListRequest{PageSize: 3, SpecOnly: true}, false},
		{"all projects, snapshot gone", &sanbootv1.ListRequest{AllProjects: true, PageSize: 3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, withoutScheduler) // nothing writes but the test
			e.image("", "img")
			e.image("other", "img")
			for i := range 8 {
				n := newNode(fmt.Sprintf("n%d", i), "img")
				n.Metadata.Labels = map[string]string{"rack": fmt.Sprintf("r%d", i%2)}
				if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("o1", "img"), "other")}); err != nil {
				t.Fatal(err)
			}
			whole := proto.CloneOf(tc.req)
			whole.PageSize = 0
			want, err := e.api.ListNodes(e.ctx, whole)
			if err != nil {
				t.Fatal(err)
			}

			req := proto.CloneOf(tc.req)
			first, err := e.api.ListNodes(e.ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if first.Revision != want.Revision || first.NextPageToken == "" {
				t.Fatalf("first page at revision %d with token %q; want %d, the unpaged list's (nothing was written since), and more pages",
					first.Revision, first.NextPageToken, want.Revision)
			}
			// After the first page: a node relabelled, one created, in
			// each project.
			relabel := newNode("n1", "img")
			relabel.Metadata.Labels = map[string]string{"rack": "r0"}
			for _, n := range []*sanbootv1.Node{relabel, newNode("n10", "img"), withMACs(newNode("o0", "img"), "other")} {
				if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
					t.Fatal(err)
				}
			}
			if !tc.snapshot {
				for range 20 { // more lists than a member keeps snapshots of
					if _, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{AllProjects: true, PageSize: 1}); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := first.Nodes
			req.PageToken = first.NextPageToken
			for req.PageToken != "" {
				resp, err := e.api.ListNodes(e.ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.Revision != first.Revision {
					t.Fatalf("a page at revision %d, the first at %d", resp.Revision, first.Revision)
				}
				if len(resp.Nodes) > int(req.PageSize) {
					t.Fatalf("a page of %d nodes, asked for %d", len(resp.Nodes), req.PageSize)
				}
				got = append(got, resp.Nodes...)
				req.PageToken = resp.NextPageToken
			}
			if len(got) != len(want.Nodes) {
				t.Fatalf("the pages hold %d nodes, the list before the changes %d", len(got), len(want.Nodes))
			}
			for i := range got {
				if !proto.Equal(got[i], want.Nodes[i]) {
					t.Fatalf("node %d is\n%v\nin the pages, and before the changes\n%v", i, got[i], want.Nodes[i])
				}
				if tc.req.SpecOnly && got[i].Status != nil {
					t.Fatalf("node %d has a status in a spec_only list", i)
				}
			}
		})
	}
}

// A list after a write shows it, even when the API server's cache is held
// back: the list waits for the cache to reach what etcd held when it was
// asked (never answers older), and answers once the cache catches up.
func TestListAfterWriteSeesItWhileCacheIsHeldBack(t *testing.T) {
	e := start(t)
	base := e.image("", "base").GetMetadata().GetRevision()
	eventually.True(t, "the cache to list", func() bool { return apiserver.CacheRevision(e.srv) >= base },
		eventually.Seen(func() string { return fmt.Sprint(apiserver.CacheRevision(e.srv)) }))
	e.hold.Pause()
	defer e.hold.Resume()
	rev := e.node("n1", "base").GetMetadata().GetRevision()

	ctx, cancel := context.WithTimeout(e.ctx, 500*time.Millisecond)
	_, err := e.api.ListNodes(ctx, &sanbootv1.ListRequest{PageSize: 10, SpecOnly: true})
	cancel()
	wantCode(t, err, codes.DeadlineExceeded) // not an answer without the write

	type answer struct {
		resp *sanbootv1.ListNodesResponse
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{PageSize: 10, SpecOnly: true})
		done <- answer{resp, err}
	}()
	e.hold.Resume()
	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.resp.Revision < rev || len(a.resp.Nodes) != 1 || a.resp.Nodes[0].GetMetadata().GetName() != "n1" {
		t.Fatalf("list after the write (revision %d): revision %d, nodes %v", rev, a.resp.Revision, a.resp.Nodes)
	}
}

// The revision of a list from the cache is what PutNodes' read_revision
// checks against: with the cache held back after the list, a node changed
// or created since is still refused, one unchanged since is written.
func TestPutNodesReadRevisionOfACachedList(t *testing.T) {
	e := start(t, withoutScheduler) // nothing writes but the test
	e.image("", "base")
	e.node("kept", "base")
	e.node("changed", "base")
	list, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{PageSize: 10, SpecOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	read := list.GetRevision()
	if got := apiserver.CacheRevision(e.srv); got != read {
		t.Fatalf("list at revision %d, the cache at %d", read, got)
	}
	e.hold.Pause()
	defer e.hold.Resume()
	changed := newNode("changed", "base")
	changed.Metadata.Labels = map[string]string{"by": "someone-else"}
	if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: changed}); err != nil {
		t.Fatal(err)
	}
	e.node("raced", "base")
	if got := apiserver.CacheRevision(e.srv); got != read {
		t.Fatalf("the cache moved to %d while held at %d", got, read)
	}

	relabel := func(n *sanbootv1.Node) *sanbootv1.Node {
		n.Metadata.Labels = map[string]string{"by": "client"}
		return n
	}
	resp, err := e.api.PutNodes(e.ctx, &sanbootv1.PutNodesRequest{ReadRevision: read, Nodes: []*sanbootv1.Node{
		relabel(newNode("kept", "base")), relabel(newNode("changed", "base")), relabel(newNode("raced", "base")),
	}})
	if err != nil {
		t.Fatal(err)
	}
	for k, w := range []struct {
		result sanbootv1.PutResult
		code   codes.Code
	}{
		{sanbootv1.PutResult_PUT_RESULT_CONFIGURED, codes.OK},
		{0, codes.Aborted},
		{0, codes.Aborted},
	} {
		r := resp.GetResults()[k]
		if r.GetResult() != w.result || codes.Code(r.GetCode()) != w.code {
			t.Errorf("node %d: result %v code %v (%s), want %v %v", k, r.GetResult(), codes.Code(r.GetCode()), r.GetMessage(), w.result, w.code)
		}
	}
}

// An image's users come from the cache once it has reached the revision
// the image was read at, and from etcd while it is held back: GetImage and
// PutImage name every node that uses the image, never an older list.
func TestImageUsersWhileCacheIsHeldBack(t *testing.T) {
	e := start(t, withoutScheduler)
	defer e.hold.Resume()
	e.image("", "base")
	e.image("", "other")
	e.node("n1", "base")
	e.node("n2", "other")
	for _, held := range []bool{false, true} {
		name := "n3"
		if held {
			e.hold.Pause()
			name = "n4"
		}
		e.node(name, "base")
		want := []string{"n1", "n3"}
		if held {
			want = append(want, "n4")
		}
		im, err := e.api.GetImage(e.ctx, &sanbootv1.GetRequest{Name: "base"})
		if err != nil {
			t.Fatal(err)
		}
		put, err := e.api.PutImage(e.ctx, &sanbootv1.PutImageRequest{Image: &sanbootv1.Image{
			Metadata: &sanbootv1.ObjectMeta{Name: "base"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 1 << 20}}})
		if err != nil {
			t.Fatal(err)
		}
		for what, got := range map[string][]string{"GetImage": im.GetStatus().GetUsedBy(), "PutImage": put.GetImage().GetStatus().GetUsedBy()} {
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("cache held %v: %s says the image is used by %v, want %v", held, what, got, want)
			}
		}
		if put.GetResult() != sanbootv1.PutResult_PUT_RESULT_UNCHANGED {
			t.Errorf("PutImage of the same image: %v, want unchanged", put.GetResult())
		}
	}
	e.hold.Resume()
	if _, err := e.api.GetImage(e.ctx, &sanbootv1.GetRequest{Name: "none"}); err == nil {
		t.Error("GetImage of an image that does not exist: no error")
	} else {
		wantCode(t, err, codes.NotFound)
	}
}

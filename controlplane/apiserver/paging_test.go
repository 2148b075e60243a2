package apiserver_test

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/internal/fakeagent"
)

// Pages follow the list's order (project, then name, also for projects
// that prefix one another), miss and repeat nothing, and are all read at
// the first page's revision.
func TestListPages(t *testing.T) {
	e := start(t)
	var want []string
	for _, p := range []string{"a", "a-b", "b"} {
		e.image(p, "img")
		for _, n := range []string{"x", "y"} {
			if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode(n, "img"), p)}); err != nil {
				t.Fatal(err)
			}
			want = append(want, p+"/"+n)
		}
	}
	req := &sanbootv1.ListRequest{AllProjects: true, PageSize: 4}
	var got []string
	var rev int64
	for page := 0; ; page++ {
		resp, err := e.api.ListNodes(e.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if page == 0 {
			rev = resp.Revision
			// Written after the first page: not in the list.
			if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode("z", "img"), "b")}); err != nil {
				t.Fatal(err)
			}
		} else if resp.Revision != rev {
			t.Errorf("page %d at revision %d, want the first page's %d", page, resp.Revision, rev)
		}
		if len(resp.Nodes) > 4 {
			t.Fatalf("page of %d nodes, asked for 4", len(resp.Nodes))
		}
		for _, n := range resp.Nodes {
			got = append(got, n.Metadata.Project+"/"+n.Metadata.Name)
		}
		if resp.NextPageToken == "" {
			break
		}
		req.PageToken = resp.NextPageToken
	}
	if len(got) != len(want) {
		t.Fatalf("pages gave %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pages gave %v, want %v", got, want)
		}
	}
	imgs, err := e.api.ListImages(e.ctx, &sanbootv1.ListRequest{AllProjects: true, PageSize: 2})
	if err != nil || len(imgs.Images) != 2 || imgs.NextPageToken == "" {
		t.Fatalf("first page of images: %v, %v", imgs, err)
	}

	for _, bad := range []*sanbootv1.ListRequest{
		{PageSize: -1},
		{PageSize: 2, PageToken: "not-a-token"},
		{PageToken: imgs.NextPageToken},
	} {
		_, err := e.api.ListNodes(e.ctx, bad)
		wantCode(t, err, codes.InvalidArgument)
	}
}

// The pages of one project's nodes (read page by page, each only as far
// as it holds) add up to what one unpaged list shows, statuses and
// placements joined, for any page size and selector; nodes of a project
// that sorts next to it stay out.
func TestListPagesOfOneProject(t *testing.T) {
	e := start(t)
	e.image(api.DefaultProject, "img")
	e.image("default-b", "img")
	a1, a2 := e.agent("a1", 60, "img"), e.agent("a2", 60, "img")
	for i := range 9 {
		n := newNode(fmt.Sprintf("n%d", i), "img")
		n.Metadata.Labels = map[string]string{"rack": fmt.Sprintf("r%d", i%3)}
		if i%4 == 0 {
			n.Spec.Macs = []string{fmt.Sprintf("52:54:00:00:00:%02x", i)}
		}
		if i%2 == 0 {
			n.Spec.Agent = "a2"
		}
		if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: n}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.api.PutNode(e.ctx, &sanbootv1.PutNodeRequest{Node: withMACs(newNode(fmt.Sprintf("n%d", i), "img"), "default-b")}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 9 {
		e.waitNode(fmt.Sprintf("n%d", i), func(n *sanbootv1.Node) bool { return n.GetStatus().GetAgent() != "" })
	}
	for i, a := range []*fakeagent.Agent{a2, a1, a2} { // as spec.agent placed them
		name := fmt.Sprintf("n%d", i)
		if err := a.Report(e.ctx, api.DefaultProject, name, api.PhaseReady, "ready "+name); err != nil {
			t.Fatal(err)
		}
		e.waitNode(name, phase(api.PhaseReady))
	}
	for _, sel := range []string{"", "rack=r1", "rack!=r0", "rack=none"} {
		all, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{LabelSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			size     int32
			specOnly bool
		}{{1, false}, {2, false}, {4, false}, {9, false}, {100, false}, {2, true}, {100, true}} {
			size := c.size
			req := &sanbootv1.ListRequest{LabelSelector: sel, PageSize: size, SpecOnly: c.specOnly}
			var got []*sanbootv1.Node
			for pages := 1; ; pages++ {
				resp, err := e.api.ListNodes(e.ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Nodes) > int(size) {
					t.Fatalf("selector %q, page size %d: a page of %d nodes", sel, size, len(resp.Nodes))
				}
				got = append(got, resp.Nodes...)
				if resp.NextPageToken == "" {
					break
				}
				if pages > 20 {
					t.Fatalf("selector %q, page size %d: more than 20 pages", sel, size)
				}
				req.PageToken = resp.NextPageToken
			}
			if len(got) != len(all.Nodes) {
				t.Fatalf("selector %q, page size %d: pages hold %d nodes, the list %d", sel, size, len(got), len(all.Nodes))
			}
			for i := range got {
				want := all.Nodes[i]
				if c.specOnly {
					want = proto.CloneOf(want)
					want.Status = nil
				}
				if !proto.Equal(got[i], want) {
					t.Fatalf("selector %q, page size %d: node %d is\n%v\nin the pages, and in the list\n%v", sel, size, i, got[i], all.Nodes[i])
				}
			}
		}
	}
	whole, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{SpecOnly: true})
	if err != nil || len(whole.Nodes) != 9 || whole.Nodes[0].Status != nil || whole.Nodes[0].Spec.GetImage() != "img" {
		t.Fatalf("one page, spec only: %v, %v", whole, err)
	}
	_, err = e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{Project: "default-b", PageSize: 2, PageToken: func() string {
		resp, err := e.api.ListNodes(e.ctx, &sanbootv1.ListRequest{PageSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		return resp.NextPageToken
	}()})
	wantCode(t, err, codes.InvalidArgument, "project")
}

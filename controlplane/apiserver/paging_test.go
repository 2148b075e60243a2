package apiserver_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
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

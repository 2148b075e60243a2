package cli

import (
	"context"

	"google.golang.org/grpc"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// pageSize is how many objects sanbootctl asks for per page: lists of any
// length are read page by page (the server also cuts pages to stay below
// gRPC's message limit), all pages at the revision of the first.
const pageSize = 1000

// listNodes is ListNodes over every page.
func listNodes(ctx context.Context, c sanbootv1.SanbootClient, req *sanbootv1.ListRequest) (*sanbootv1.ListNodesResponse, error) {
	return listAll(ctx, req, c.ListNodes,
		func(r *sanbootv1.ListNodesResponse) string { return r.GetNextPageToken() },
		func(all, r *sanbootv1.ListNodesResponse) { all.Nodes = append(all.Nodes, r.GetNodes()...) })
}

// listImages is ListImages over every page.
func listImages(ctx context.Context, c sanbootv1.SanbootClient, req *sanbootv1.ListRequest) (*sanbootv1.ListImagesResponse, error) {
	return listAll(ctx, req, c.ListImages,
		func(r *sanbootv1.ListImagesResponse) string { return r.GetNextPageToken() },
		func(all, r *sanbootv1.ListImagesResponse) { all.Images = append(all.Images, r.GetImages()...) })
}

// listAll calls list for each page and joins the pages into the first
// response.
func listAll[R any](ctx context.Context, req *sanbootv1.ListRequest,
	list func(context.Context, *sanbootv1.ListRequest, ...grpc.CallOption) (*R, error),
	next func(*R) string, add func(all, page *R)) (*R, error) {
	req.PageSize, req.PageToken = pageSize, ""
	all, err := list(ctx, req)
	if err != nil {
		return nil, err
	}
	for tok := next(all); tok != ""; {
		req.PageToken = tok
		p, err := list(ctx, req)
		if err != nil {
			return nil, err
		}
		add(all, p)
		tok = next(p)
	}
	return all, nil
}

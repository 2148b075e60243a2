package filestore

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/sanboot/sanboot/agent/store"
)

// HTTPOpener returns an Opener that fetches url sources with an HTTP GET
// through client (nil: a client without a time limit, since images are
// large; the context still cancels it). It refuses upload sources: those
// are staged on the control plane and need an Opener that knows it.
func HTTPOpener(client *http.Client) Opener {
	if client == nil {
		client = &http.Client{}
	}
	return func(ctx context.Context, src store.Source) (io.ReadCloser, error) {
		if src.Kind != store.SourceURL {
			return nil, fmt.Errorf("this agent has no way to fetch %s sources yet: use a url, blank, copy or snapshot source", src.Kind)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URL, nil)
		if err != nil {
			return nil, fmt.Errorf("url %q: %w: fix the image's source url", src.URL, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", src.URL, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: %s: check the url and that the server serves it", src.URL, resp.Status)
		}
		return resp.Body, nil
	}
}

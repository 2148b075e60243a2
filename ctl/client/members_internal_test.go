package client

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The cache of learned members: what a run saved is what the next run of
// the same endpoints learns first (without the configured ones); another
// set of endpoints, a damaged file or no directory give nothing.
func TestLearnedEndpointsCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sanboot")
	configured := []string{"127.0.0.1:7443"}
	if got := learnedEndpoints(dir, configured); got != nil {
		t.Fatalf("before any save: %v", got)
	}
	saveEndpoints(dir, configured, []string{"127.0.0.1:7443", "127.0.0.2:7443", "127.0.0.3:7443", "not an endpoint"})
	if got, want := learnedEndpoints(dir, configured), []string{"127.0.0.2:7443", "127.0.0.3:7443"}; !slices.Equal(got, want) {
		t.Fatalf("learned %v, want %v", got, want)
	}
	if got := learnedEndpoints(dir, []string{"127.0.0.9:7443"}); got != nil {
		t.Fatalf("other endpoints learned %v", got)
	}
	if got := learnedEndpoints("", configured); got != nil {
		t.Fatalf("no cache directory learned %v", got)
	}
	if err := os.WriteFile(membersFile(dir, configured), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := learnedEndpoints(dir, configured); got != nil {
		t.Fatalf("a damaged cache learned %v", got)
	}
}

package client

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
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

// Endpoints left because their member had no etcd leader are kept for the
// next runs until their time is up, through a save of discovered members
// too; expired ones are dropped.
func TestLeftEndpointsCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sanboot")
	configured := []string{"127.0.0.1:7443", "127.0.0.2:7443"}
	now := time.Now()
	saveLeft(dir, configured, "127.0.0.1:7443", now.Add(time.Minute))
	saveLeft(dir, configured, "127.0.0.3:7443", now.Add(-time.Second)) // already up
	saveEndpoints(dir, configured, []string{"127.0.0.1:7443", "127.0.0.2:7443", "127.0.0.3:7443"})
	left := leftEndpoints(dir, configured, now)
	if len(left) != 1 || !left["127.0.0.1:7443"].Equal(now.Add(time.Minute)) {
		t.Fatalf("left %v, want 127.0.0.1:7443 for a minute", left)
	}
	if got := learnedEndpoints(dir, configured); !slices.Equal(got, []string{"127.0.0.3:7443"}) {
		t.Fatalf("learned %v beside the left ones", got)
	}
	if got := leftEndpoints(dir, configured, now.Add(2*time.Minute)); len(got) != 0 {
		t.Fatalf("after its time, still left: %v", got)
	}
}

package client

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The members a client learned (package dial's discovery) are kept in a
// small file per set of configured endpoints, under Options.CacheDir, so
// that the next sanbootctl run knows them before it connects: when the
// one configured member has died since, the run still reaches another one.
// The file is a cache: a missing or unreadable one is no error, and every
// run that reaches a member writes it again from the registrations.

// membersFile is the cache file of the configured endpoints.
func membersFile(dir string, configured []string) string {
	sum := sha256.Sum256([]byte(strings.Join(configured, ",")))
	return filepath.Join(dir, "endpoints-"+hex.EncodeToString(sum[:8])+".json")
}

// cachedMembers are the configured endpoints with the learned ones after
// them.
type cachedMembers struct {
	Configured []string `json:"configured"`
	Endpoints  []string `json:"endpoints"`
	// Left are endpoints whose member answered that it had no etcd
	// leader, and until when the next runs skip them too
	// (dial.Options.Left).
	Left map[string]time.Time `json:"left,omitempty"`
}

// readCache is the cache of configured, empty when there is no usable one.
func readCache(dir string, configured []string) cachedMembers {
	if dir == "" {
		return cachedMembers{}
	}
	b, err := os.ReadFile(membersFile(dir, configured))
	if err != nil {
		return cachedMembers{}
	}
	var c cachedMembers
	if json.Unmarshal(b, &c) != nil || !slices.Equal(c.Configured, configured) {
		return cachedMembers{}
	}
	return c
}

// leftEndpoints are the endpoints cached as left whose time is not up.
func leftEndpoints(dir string, configured []string, now time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for e, until := range readCache(dir, configured).Left {
		if now.Before(until) {
			out[e] = until
		}
	}
	return out
}

// learnedEndpoints returns the endpoints cached for configured that are
// not among them; none when there is no usable cache.
func learnedEndpoints(dir string, configured []string) []string {
	var out []string
	for _, e := range readCache(dir, configured).Endpoints {
		if _, _, err := net.SplitHostPort(e); err == nil && !slices.Contains(configured, e) && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out
}

// saveEndpoints writes the endpoints a discovery found into the cache,
// keeping the left ones whose time is not up.
func saveEndpoints(dir string, configured, endpoints []string) {
	writeCache(dir, cachedMembers{Configured: configured, Endpoints: endpoints, Left: leftEndpoints(dir, configured, time.Now())})
}

// saveLeft records in the cache that endpoint was left until until.
func saveLeft(dir string, configured []string, endpoint string, until time.Time) {
	c := readCache(dir, configured)
	c.Configured = configured
	c.Left = leftEndpoints(dir, configured, time.Now())
	c.Left[endpoint] = until
	writeCache(dir, c)
}

// writeCache writes the cache (atomically; errors are ignored: it is only
// a cache).
func writeCache(dir string, c cachedMembers) {
	if dir == "" || os.MkdirAll(dir, 0o700) != nil {
		return
	}
	b, err := json.Marshal(c)
	if err != nil {
		return
	}
	path := membersFile(dir, c.Configured)
	tmp, err := os.CreateTemp(dir, ".endpoints-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(b)
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), path) != nil {
		os.Remove(tmp.Name())
	}
}

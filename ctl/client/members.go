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
}

// learnedEndpoints returns the endpoints cached for configured that are
// not among them; none when there is no usable cache.
func learnedEndpoints(dir string, configured []string) []string {
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile(membersFile(dir, configured))
	if err != nil {
		return nil
	}
	var c cachedMembers
	if json.Unmarshal(b, &c) != nil || !slices.Equal(c.Configured, configured) {
		return nil
	}
	var out []string
	for _, e := range c.Endpoints {
		if _, _, err := net.SplitHostPort(e); err == nil && !slices.Contains(configured, e) && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out
}

// saveEndpoints writes the cache (atomically; errors are ignored: it is
// only a cache).
func saveEndpoints(dir string, configured, endpoints []string) {
	if dir == "" || os.MkdirAll(dir, 0o700) != nil {
		return
	}
	b, err := json.Marshal(cachedMembers{Configured: configured, Endpoints: endpoints})
	if err != nil {
		return
	}
	path := membersFile(dir, configured)
	tmp, err := os.CreateTemp(dir, ".endpoints-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(b)
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), path) != nil {
		os.Remove(tmp.Name())
	}
}

package integration_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sanboot/sanboot/agent"
	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/eventually"
)

// An agent that registers after an image's staged upload was collected
// can never get the image: the image must not say Ready, and the replica
// says what to do (issue 13).
func TestLateAgentCannotGetACollectedUpload(t *testing.T) {
	s := start(t)
	in := filepath.Join(t.TempDir(), "in.raw")
	if err := os.WriteFile(in, disk(1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	s.ctl("image", "import", "golden", in, "--wait")
	eventually.True(t, "the staged upload collected", func() bool { return len(s.staged()) == 0 },
		eventually.Seen(func() string { return fmt.Sprintf("%q", s.staged()) }))

	log := cptest.Log(t)
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, testAgent("a2", s.cli.Endpoints(), agent.StoreFile, t.TempDir(), log)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent a2: %v", err)
		}
	})

	var im *sanbootv1.Image
	eventually.True(t, "a2's replica to fail", func() bool {
		var err error
		im, err = s.api.GetImage(s.ctx, &sanbootv1.GetRequest{Name: "golden"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range im.Status.Replicas {
			if r.Agent == "a2" && r.Phase == api.ReplicaFailed {
				t.Logf("a2: %s", r.Message)
				return true
			}
		}
		return false
	}, eventually.Seen(func() string { return im.GetStatus().String() }))
	if im.Status.Phase == api.ReplicaReady {
		t.Errorf("image Ready although agent a2 can never get it: %v", im.Status)
	}
	out := s.ctl("get", "images", "golden", "-o", "wide")
	t.Logf("%s", out)
	if strings.Contains(out, " Ready ") && !strings.Contains(out, "a2=Failed") {
		t.Errorf("get images says Ready: %s", out)
	}
}

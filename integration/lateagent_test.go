package integration_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/fetch"
	"github.com/sanboot/sanboot/agent/reconciler"
	"github.com/sanboot/sanboot/agent/registry"
	"github.com/sanboot/sanboot/agent/store/filestore"
	faketarget "github.com/sanboot/sanboot/agent/target/fake"
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
	st, err := filestore.New(filestore.Options{Root: t.TempDir(), Open: fetch.New(fetch.Config{Client: s.cli, Log: log}).Open, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg, err := registry.New(s.cli, registry.Config{Name: "a2", Driver: "fake", Portals: []string{"127.0.0.1:3260"}, TTL: 10 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := reconciler.New(reconciler.Config{Agent: "a2", Client: s.cli, Store: st, Driver: faketarget.New(),
		Portals: []string{"127.0.0.1:3260"}, RetryBase: 100 * time.Millisecond, RetryMax: time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan struct{}, 2)
	go func() { reg.Run(ctx); done <- struct{}{} }()
	go func() { rec.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })

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

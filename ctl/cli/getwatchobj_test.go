package cli

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/eventually"
	"github.com/sanboot/sanboot/internal/golden"
	"github.com/sanboot/sanboot/internal/syncbuf"
)

// imageWatchFake is snapFake with a FAKE WatchImages: it sends the selected
// images (INITIAL), SYNCED, then makes every image of readyAfter Ready and
// sends it MODIFIED; then the stream stays open until the client leaves.
type imageWatchFake struct {
	*snapFake
	watches chan struct{} // one value per stream after SYNCED
}

func (f *imageWatchFake) WatchImages(req *sanbootv1.WatchImagesRequest, stream grpc.ServerStreamingServer[sanbootv1.ImageEvent]) error {
	f.mu.Lock()
	f.count("WatchImages")
	var evs []*sanbootv1.ImageEvent
	match := func(im *sanbootv1.Image) bool {
		return (req.GetAllProjects() || im.Metadata.Project == api.ProjectOrDefault(req.GetProject())) &&
			(len(req.GetNames()) == 0 || slices.Contains(req.GetNames(), im.Metadata.Name))
	}
	var later []*sanbootv1.Image
	for _, k := range slices.Sorted(mapsKeys(f.images)) {
		im := f.images[k]
		if !match(im) {
			continue
		}
		evs = append(evs, &sanbootv1.ImageEvent{Type: sanbootv1.NodeEvent_TYPE_INITIAL, Image: proto.CloneOf(im)})
		if f.readyAfter[im.Metadata.Name] > 0 && im.GetStatus().GetPhase() != api.ReplicaReady {
			im.Status = &sanbootv1.ImageStatus{Phase: api.ReplicaReady}
			for _, a := range im.Spec.Agents {
				im.Status.Replicas = append(im.Status.Replicas, &sanbootv1.ImageReplica{Agent: a, Phase: api.ReplicaReady, ObservedGeneration: im.Metadata.Generation})
			}
			later = append(later, proto.CloneOf(im))
		}
	}
	evs = append(evs, &sanbootv1.ImageEvent{Type: sanbootv1.NodeEvent_TYPE_SYNCED})
	for _, im := range later {
		evs = append(evs, &sanbootv1.ImageEvent{Type: sanbootv1.NodeEvent_TYPE_MODIFIED, Image: im})
	}
	f.mu.Unlock()
	for _, ev := range evs {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	select {
	case f.watches <- struct{}{}:
	default:
	}
	<-stream.Context().Done()
	return nil
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func newImageWatchFake(t *testing.T) (*imageWatchFake, string) {
	base, _ := seededFake(t)
	sf := &snapFake{fakeSanboot: base, readyAfter: map[string]int{}, failAfter: map[string]int{}, gets: map[string]int{}}
	seedSnapshots(sf)
	f := &imageWatchFake{snapFake: sf, watches: make(chan struct{}, 16)}
	return f, serveSanboot(t, f)
}

// snapshot create --wait follows WatchImages and polls nothing.
func TestSnapshotCreateWaitsThroughWatch(t *testing.T) {
	f, addr := newImageWatchFake(t)
	f.readyAfter["snap-new"] = 1
	r := runCLI(t, testCtx(t), nil, "--endpoints", addr, "snapshot", "create", "node-01", "snap-new", "--wait")
	if r.code != ExitOK {
		t.Fatalf("exit code %d, stderr:\n%s", r.code, r.stderr)
	}
	if want := "image/snap-new: Pending: no agent has reported yet\nimage/snap-new: Ready\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	if n := f.gets["snap-new"]; n != 0 {
		t.Errorf("%d GetImage polls of snap-new; the wait must follow the watch only", n)
	}
	if n := f.callCount("WatchImages"); n != 1 {
		t.Errorf("%d WatchImages calls, want 1", n)
	}
}

// get snapshots -w prints the snapshots (not the other images), then a row
// per change, and ends quietly (exit 0) when interrupted.
func TestGetSnapshotsWatch(t *testing.T) {
	f, addr := newImageWatchFake(t)
	f.readyAfter["node-01-snap-copy"] = 1
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var out, errOut syncbuf.Buffer
	done := make(chan result, 1)
	go func() {
		code := Run(ctx, Env{Stdout: &out, Stderr: &errOut, Now: func() time.Time { return fixedNow },
			Getenv: func(k string) string { return map[string]string{"HOME": t.TempDir()}[k] }},
			[]string{"--endpoints", addr, "get", "snapshots", "-w"})
		done <- result{code: code, stdout: out.String(), stderr: errOut.String()}
	}()
	select {
	case <-f.watches:
	case r := <-done:
		t.Fatalf("ended before its watch was synced: %d %q %q", r.code, r.stdout, r.stderr)
	case <-time.After(time.Minute):
		t.Fatal("no watch within a minute")
	}
	eventually.True(t, "a second row of node-01-snap-copy", func() bool { return strings.Count(out.String(), "node-01-snap-copy") >= 2 },
		eventually.Seen(func() string { return "stdout:\n" + out.String() }))
	cancel()
	r := awaitResult(t, done)
	if r.code != ExitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "node-01-snap ") ||
		!strings.Contains(lines[2], "Pending") || !strings.Contains(lines[3], "node-01-snap-copy") || !strings.Contains(lines[3], "Ready") {
		t.Fatalf("stdout:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "\ndebian-13 ") {
		t.Errorf("a plain image was printed among snapshots:\n%s", r.stdout)
	}
}

// delete --keep-disk asks the API server to keep the disk (DeleteNode
// keep_disk), prints the image it made, and with --wait waits for the
// node to go and the image to be Ready.
func TestDeleteKeepDisk(t *testing.T) {
	f, addr := seededFake(t)
	r := runCLI(t, testCtx(t), nil, "--endpoints", addr, "delete", "node", "node-01", "--keep-disk")
	golden.Check(t, "delete_keep_disk.txt", transcript(r))
	if n := f.callCount("PutImage"); n != 0 {
		t.Errorf("%d PutImage calls: the API server makes the image, not sanbootctl", n)
	}
	name := keepDiskName("node-01", fixedNow)
	f.mu.Lock()
	im, ok := f.images[key("default", name)]
	keep := f.nodes[key("default", "node-01")].GetSpec().GetKeepDisk()
	f.mu.Unlock()
	if !ok || im.GetSpec().GetSource().GetSnapshot().GetNode() != "node-01" || !keep {
		t.Fatalf("image %s = %v (node keepDisk %v)", name, im, keep)
	}
}

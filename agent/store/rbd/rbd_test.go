package rbd_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/store/rbd"
	"github.com/sanboot/sanboot/agent/store/storetest"
	"github.com/sanboot/sanboot/internal/cephtest"
)

var ctx = context.Background()

// TestStore runs everything against one real Ceph cluster (started once:
// ~10 s); every subtest has a pool and a restricted user of its own.
func TestStore(t *testing.T) {
	c := cephtest.Start(t)
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { s, _ := newStore(t, c, "agent-a"); return s })
	})
	t.Run("DeletedImageStaysForItsClones", func(t *testing.T) { testDeletedImageStays(t, c) })
	t.Run("SnapshotImageWithoutCopy", func(t *testing.T) { testSnapshot(t, c) })
	t.Run("CloneDepthIsBounded", func(t *testing.T) { testDepth(t, c) })
	t.Run("CrashLeftoversAreFinished", func(t *testing.T) { testLeftovers(t, c) })
	t.Run("TwoAgentsShareThePool", func(t *testing.T) { testTwoAgents(t, c) })
	t.Run("UploadChecksSizeAndSum", func(t *testing.T) { testUpload(t, c) })
	t.Run("CloneCalls", func(t *testing.T) { testCloneCalls(t, c) })
}

// What a new disk costs in rbd processes (each ~50 ms of start-up): at
// most 5 once the image has been read in the last seconds (bulk
// provisioning), one more for the first disk of an image.
func testCloneCalls(t *testing.T, c *cephtest.Cluster) {
	log := filepath.Join(t.TempDir(), "calls")
	wrapper := filepath.Join(t.TempDir(), "rbd")
	rbdPath, err := exec.LookPath("rbd")
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$*\" >>" + log + "\nexec " + rbdPath + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	p := c.NewPool(t)
	s := openStore(t, c, p, "agent-a", rbd.Options{RBD: wrapper})
	ensure(t, s, blank("golden", 4<<20))
	calls := func(node string) int {
		if err := os.WriteFile(log, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		clone(t, s, "golden", node, "uid-"+node)
		b, _ := os.ReadFile(log)
		t.Logf("Clone of %s:\n%s", node, b)
		return strings.Count(string(b), "\n")
	}
	first, second := calls("n1"), calls("n2")
	if first > 6 || second > 5 {
		t.Errorf("a new disk costs %d rbd calls (the first of an image: %d), want at most 5 (6)", second, first)
	}
	if d, err := s.StatDisk(ctx, "default", "n2"); err != nil || d.Owner != "uid-n2" || d.SizeBytes != 4<<20 {
		t.Errorf("StatDisk after Clone = %+v, %v", d, err)
	}
}

type env struct {
	c    *cephtest.Cluster
	pool cephtest.Pool
}

func newStore(t *testing.T, c *cephtest.Cluster, agent string) (*rbd.Store, env) {
	t.Helper()
	p := c.NewPool(t)
	return openStore(t, c, p, agent, rbd.Options{}), env{c: c, pool: p}
}

func openStore(t *testing.T, c *cephtest.Cluster, p cephtest.Pool, agent string, o rbd.Options) *rbd.Store {
	t.Helper()
	o.Conf, o.User, o.Keyring, o.Pool, o.Agent = c.Conf, p.User, p.Keyring, p.Name, agent
	o.Log = slog.New(slog.DiscardHandler)
	s, err := rbd.New(ctx, o)
	if err != nil {
		t.Fatalf("rbd.New: %v", err)
	}
	return s
}

// images lists the pool's RBD images (as the admin sees them).
func (e env) images(t *testing.T) []string {
	t.Helper()
	var names []string
	if err := json.Unmarshal([]byte(e.c.Admin(t, "rbd", "ls", "-p", e.pool.Name, "--format", "json")), &names); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// sha returns the sha256 of an RBD image's bytes (rbd export to a file).
func (e env) sha(t *testing.T, path string) string {
	t.Helper()
	pool, img, ok := store.ParseRBDPath(path)
	if !ok {
		t.Fatalf("%q is not an rbd path", path)
	}
	out := filepath.Join(t.TempDir(), "export.raw")
	e.c.Admin(t, "rbd", "export", "--no-progress", pool+"/"+img, out)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// write writes 1 MiB of pattern b at offset off of an RBD image (rbd
// import-diff would do; rbd bench writes a fixed pattern, so qemu-io, which
// the tgt tests use anyway, writes a chosen one).
func (e env) write(t *testing.T, path string, b byte, off int64) {
	t.Helper()
	pool, img, _ := store.ParseRBDPath(path)
	spec := "rbd:" + pool + "/" + img + ":conf=" + e.c.Conf + ":id=admin"
	e.c.Admin(t, "qemu-io", "-f", "raw", "-c", "write -P "+itoa(int64(b))+" "+itoa(off)+" 1M", spec)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func blank(name string, size int64) store.ImageSpec {
	return store.ImageSpec{Project: "default", Name: name, SizeBytes: size, Source: store.Source{Kind: store.SourceBlank}}
}

func ensure(t *testing.T, s *rbd.Store, spec store.ImageSpec) store.Image {
	t.Helper()
	im, err := s.EnsureImage(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func clone(t *testing.T, s *rbd.Store, image, node, owner string) store.Disk {
	t.Helper()
	d, err := s.Clone(ctx, "default", image, node, owner)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// An image deleted while a node's disk is its clone: gone for sanboot, kept
// in the pool as old.* while the disk reads through it, removed with the
// disk. The disk's bytes never change.
func testDeletedImageStays(t *testing.T, c *cephtest.Cluster) {
	s, e := newStore(t, c, "agent-a")
	im := ensure(t, s, blank("golden", 8<<20))
	e.write(t, im.Path, 0xab, 0) // an image is immutable for sanboot; the test writes its bytes before any clone
	d := clone(t, s, "golden", "node-01", "uid-1")
	want := e.sha(t, d.Path)
	if err := s.DeleteImage(ctx, "default", "golden"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatImage(ctx, "default", "golden"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("StatImage after DeleteImage: %v, want ErrNotFound", err)
	}
	names := e.images(t)
	if len(names) != 2 || !strings.HasPrefix(names[1], "old.") || !strings.HasSuffix(names[1], ".img.default.golden") {
		t.Fatalf("pool holds %v: want the disk and the deleted image kept as old.*", names)
	}
	if got := e.sha(t, d.Path); got != want {
		t.Errorf("the disk's bytes changed when its image was deleted: %s -> %s", want, got)
	}
	if err := s.DeleteDisk(ctx, "default", "node-01"); err != nil {
		t.Fatal(err)
	}
	if names := e.images(t); len(names) != 0 {
		t.Errorf("after the last clone went the pool still holds %v", names)
	}
}

// A node's snapshot becomes an image that is a clone (no copy) and holds
// what the node wrote; a new node cloned from it sees the writes; the node's
// disk can be deleted while the image lives, and the pool empties at the end.
func testSnapshot(t *testing.T, c *cephtest.Cluster) {
	s, e := newStore(t, c, "agent-a")
	ensure(t, s, blank("golden", 8<<20))
	d := clone(t, s, "golden", "node-01", "")
	e.write(t, d.Path, 0x5a, 4<<20)
	written := e.sha(t, d.Path)
	spec := store.ImageSpec{Project: "default", Name: "snap", SizeBytes: 8 << 20,
		Source: store.Source{Kind: store.SourceSnapshot, Node: "node-01", UID: "u1"}}
	im := ensure(t, s, spec)
	e.write(t, d.Path, 0x11, 0) // after the snapshot: not in the image
	if got := e.sha(t, im.Path); got != written {
		t.Errorf("snapshot image sha %s, the disk held %s when it was taken", got, written)
	}
	var info struct {
		Parent struct{ Image string } `json:"parent"`
	}
	_, img, _ := store.ParseRBDPath(im.Path)
	if err := json.Unmarshal([]byte(e.c.Admin(t, "rbd", "info", "-p", e.pool.Name, img, "--format", "json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.Parent.Image != "disk.default.node-01" {
		t.Errorf("snapshot image's parent = %q, want the node's disk (a clone, not a copy)", info.Parent.Image)
	}
	d2 := clone(t, s, "snap", "node-02", "")
	if got := e.sha(t, d2.Path); got != written {
		t.Errorf("a node cloned from the snapshot reads %s, want %s", got, written)
	}
	for _, step := range []func() error{
		func() error { return s.DeleteDisk(ctx, "default", "node-01") },
		func() error { return s.DeleteDisk(ctx, "default", "node-02") },
		func() error { return s.DeleteImage(ctx, "default", "snap") },
		func() error { return s.DeleteImage(ctx, "default", "golden") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if names := e.images(t); len(names) != 0 {
		t.Errorf("after deleting everything the pool holds %v", names)
	}
}

// Snapshots of snapshots: an image deeper than MaxCloneDepth is published
// at once, reported Flattening with its depth, and flattened in the
// background to depth 0 with the same bytes; disks cloned from it while it
// flattens keep their bytes. Past twice the limit (an agent with a larger
// limit made the chain), the new image is flattened before it is
// published.
func testDepth(t *testing.T, c *cephtest.Cluster) {
	p := c.NewPool(t)
	s := openStore(t, c, p, "agent-a", rbd.Options{MaxCloneDepth: 2})
	e := env{c: c, pool: p}
	ensure(t, s, blank("gen0", 4<<20))
	prev := "gen0"
	sawFlattening := false
	for i, name := range []string{"gen1", "gen2", "gen3"} {
		node := "node-" + name
		d := clone(t, s, prev, node, "")
		e.write(t, d.Path, byte(i+1), int64(i)<<20)
		want := e.sha(t, d.Path)
		spec := store.ImageSpec{Project: "default", Name: name, SizeBytes: 4 << 20, Source: store.Source{Kind: store.SourceSnapshot, Node: node}}
		im := ensure(t, s, spec)
		_, img, _ := store.ParseRBDPath(im.Path)
		if depth := parents(t, e, img); im.CloneDepth != depth && !im.Flattening {
			t.Errorf("%s: EnsureImage says depth %d, rbd says %d", name, im.CloneDepth, depth)
		}
		if im.CloneDepth > 2 {
			if !im.Flattening {
				t.Errorf("%s is %d parents deep (limit 2) and not being flattened", name, im.CloneDepth)
			}
			sawFlattening = true
			// A disk cloned from it meanwhile reads the same bytes.
			early := clone(t, s, name, "early-"+name, "")
			if got := e.sha(t, early.Path); got != want {
				t.Fatalf("a disk cloned from %s while it flattens: sha %s, want %s", name, got, want)
			}
		}
		for end := time.Now().Add(2 * time.Minute); im.Flattening; im = ensure(t, s, spec) {
			if time.Now().After(end) {
				t.Fatalf("%s still flattening after 2 min (depth %d)", name, im.CloneDepth)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if depth := parents(t, e, img); depth > 2 || depth != im.CloneDepth {
			t.Errorf("%s is %d parents deep after its flatten (EnsureImage: %d), the limit is 2", name, depth, im.CloneDepth)
		}
		if got := e.sha(t, im.Path); got != want {
			t.Fatalf("%s: sha %s, want %s", name, got, want)
		}
		prev = name
	}
	if !sawFlattening {
		t.Error("no image went past the limit: the test proves nothing")
	}

	// Agent b (limit 64) makes a chain 4 deep; agent a (limit 1, hard
	// limit 2) makes the next image: flattened before it is published.
	b := openStore(t, c, p, "agent-b", rbd.Options{MaxCloneDepth: 64})
	prev = "gen0"
	for _, name := range []string{"deep1", "deep2"} {
		clone(t, b, prev, "node-"+name, "")
		ensure(t, b, store.ImageSpec{Project: "default", Name: name, SizeBytes: 4 << 20, Source: store.Source{Kind: store.SourceSnapshot, Node: "node-" + name}})
		prev = name
	}
	a := openStore(t, c, p, "agent-a", rbd.Options{MaxCloneDepth: 1})
	clone(t, a, "deep2", "node-deep3", "")
	im := ensure(t, a, store.ImageSpec{Project: "default", Name: "deep3", SizeBytes: 4 << 20, Source: store.Source{Kind: store.SourceSnapshot, Node: "node-deep3"}})
	_, img, _ := store.ParseRBDPath(im.Path)
	if depth := parents(t, e, img); depth != 0 || im.CloneDepth != 0 || im.Flattening {
		t.Errorf("deep3 (6 parents deep, hard limit 2): rbd depth %d, EnsureImage depth %d flattening %v; want flattened before it was published", depth, im.CloneDepth, im.Flattening)
	}
	for _, st := range []*rbd.Store{s, a, b} {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	}
}

func parents(t *testing.T, e env, img string) int {
	n := 0
	for {
		var info struct {
			Parent *struct{ Image string } `json:"parent"`
		}
		if err := json.Unmarshal([]byte(e.c.Admin(t, "rbd", "info", "-p", e.pool.Name, img, "--format", "json")), &info); err != nil {
			t.Fatal(err)
		}
		if info.Parent == nil {
			return n
		}
		n++
		img = info.Parent.Image
	}
}

// What a crash leaves: this agent's temp images go when it starts again
// (also one with a protected snapshot), another agent's stay; a deleted
// image whose clones are gone is collected.
func testLeftovers(t *testing.T, c *cephtest.Cluster) {
	_, e := newStore(t, c, "agent-a")
	pool := e.pool.Name
	e.c.Admin(t, "rbd", "create", "-p", pool, "--size", "4M", "tmp.agent-a.half")
	e.c.Admin(t, "rbd", "snap", "create", pool+"/tmp.agent-a.half@sanboot")
	e.c.Admin(t, "rbd", "snap", "protect", pool+"/tmp.agent-a.half@sanboot")
	e.c.Admin(t, "rbd", "create", "-p", pool, "--size", "4M", "tmp.agent-b.busy")
	e.c.Admin(t, "rbd", "create", "-p", pool, "--size", "4M", "old.1234.img.default.x")
	s := openStore(t, c, e.pool, "agent-a", rbd.Options{})
	if got, want := e.images(t), []string{"tmp.agent-b.busy"}; !slices.Equal(got, want) {
		t.Errorf("after a restart the pool holds %v, want %v", got, want)
	}
	// A deleted image left while the agent runs (two agents deleting at
	// once): the next listing of disks (every resync) removes it.
	e.c.Admin(t, "rbd", "create", "-p", pool, "--size", "4M", "old.5678.disk.default.y")
	if _, err := s.ListDisks(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := e.images(t), []string{"tmp.agent-b.busy"}; !slices.Equal(got, want) {
		t.Errorf("after ListDisks the pool holds %v, want %v", got, want)
	}
}

// Two agents on one pool see the same images and disks; both ensuring one
// image gives one image.
func testTwoAgents(t *testing.T, c *cephtest.Cluster) {
	a, e := newStore(t, c, "agent-a")
	b := openStore(t, c, e.pool, "agent-b", rbd.Options{})
	errs := make(chan error, 2)
	for _, s := range []*rbd.Store{a, b} {
		go func() { _, err := s.EnsureImage(ctx, blank("golden", 4<<20)); errs <- err }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	d := clone(t, a, "golden", "node-01", "uid")
	got, err := b.StatDisk(ctx, "default", "node-01")
	if err != nil || got != d {
		t.Errorf("agent b sees %+v, %v; agent a made %+v", got, err, d)
	}
	if names := e.images(t); !slices.Equal(names, []string{"disk.default.node-01", "img.default.golden"}) {
		t.Errorf("pool holds %v", names)
	}
}

// Upload sources: the bytes land in the image; a short source or a wrong
// sha256 leaves nothing.
func testUpload(t *testing.T, c *cephtest.Cluster) {
	data := make([]byte, 2<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sum := sha256.Sum256(data)
	p := c.NewPool(t)
	e := env{c: c, pool: p}
	s := openStore(t, c, p, "agent-a", rbd.Options{Open: func(ctx context.Context, src store.Source) (io.ReadCloser, error) {
		if src.UploadID == "short" {
			return io.NopCloser(strings.NewReader(string(data[:1000]))), nil
		}
		return io.NopCloser(strings.NewReader(string(data))), nil
	}})
	up := func(name, id, sha string) store.ImageSpec {
		return store.ImageSpec{Project: "default", Name: name, SizeBytes: int64(len(data)),
			Source: store.Source{Kind: store.SourceUpload, UploadID: id, SHA256: sha}}
	}
	im := ensure(t, s, up("good", "u1", hex.EncodeToString(sum[:])))
	if got := e.sha(t, im.Path); got != hex.EncodeToString(sum[:]) || im.SHA256 != got {
		t.Errorf("uploaded image sha %s (reported %s), want %x", got, im.SHA256, sum)
	}
	if _, err := s.EnsureImage(ctx, up("short", "short", "")); !errors.Is(err, store.ErrChecksum) {
		t.Errorf("short upload: %v, want ErrChecksum", err)
	}
	if _, err := s.EnsureImage(ctx, up("badsum", "u2", strings.Repeat("0", 64))); !errors.Is(err, store.ErrChecksum) {
		t.Errorf("wrong sha256: %v, want ErrChecksum", err)
	}
	if got := e.images(t); !slices.Equal(got, []string{"img.default.good"}) {
		t.Errorf("pool holds %v, want only the good image", got)
	}
}

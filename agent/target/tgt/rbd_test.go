package tgt_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/store/rbd"
	"github.com/sanboot/sanboot/agent/target"
	"github.com/sanboot/sanboot/agent/target/targettest"
	"github.com/sanboot/sanboot/agent/target/tgt"
	"github.com/sanboot/sanboot/internal/cephtest"
)

// TestRBD serves RBD images through tgt's rbd backing store (Debian's
// tgt-rbd), against a real Ceph cluster started by the test: the target
// conformance suite on RBD disks, and a node's disk made by the RBD store
// read back byte for byte by its own initiator and refused to another.
func TestRBD(t *testing.T) {
	requireRealTgt(t)
	if _, err := os.Stat("/usr/lib/tgt/backing-store/bs_rbd.so"); err != nil {
		t.Fatalf("tgt's rbd backing store is missing (%v): install tgt-rbd (hack/install-deps.sh does)", err)
	}
	c := cephtest.Start(t)
	withRBD := func(cfg *tgt.ManagedConfig) { cfg.RBD = tgt.RBDConfig{Conf: c.Conf, User: c.User} }
	t.Run("Conformance", func(t *testing.T) {
		m, portals := startTgtd(t, 1, withRBD)
		b := &rbdBacking{c: c}
		targettest.Run(t, func(t *testing.T) target.Driver { return m.Driver() },
			targettest.WithPortals(portals...), targettest.WithBacking(b))
		b.removeAll(t) // after every subtest's targets are gone
	})
	t.Run("StoreDiskReadByItsInitiator", func(t *testing.T) { testRBDReadBack(t, c, withRBD) })
}

// rbdBacking makes RBD images in the cluster's pool.
type rbdBacking struct {
	c    *cephtest.Cluster
	n    atomic.Int64
	made []string
}

func (b *rbdBacking) Make(t *testing.T, name string, size int64) string {
	img := fmt.Sprintf("targettest.%s.%d", name, b.n.Add(1))
	b.c.Admin(t, "rbd", "create", "-p", b.c.Pool, "--size", strconv.FormatInt(size, 10)+"B", img)
	b.made = append(b.made, img)
	return store.RBDPath(b.c.Pool, img)
}

// removeAll removes the images Make made; an image a target still holds
// open cannot be removed (watchers) and fails the test.
func (b *rbdBacking) removeAll(t *testing.T) {
	for _, img := range b.made {
		b.c.Admin(t, "rbd", "rm", "--no-progress", "-p", b.c.Pool, img)
	}
}

func (b *rbdBacking) Exists(t *testing.T, path string) bool {
	pool, img, _ := store.ParseRBDPath(path)
	_, err := exec.Command("rbd", "--conf", b.c.Conf, "info", pool+"/"+img).CombinedOutput()
	return err == nil
}

func testRBDReadBack(t *testing.T, c *cephtest.Cluster, withRBD func(*tgt.ManagedConfig)) {
	ctx := context.Background()
	st, err := rbd.New(ctx, rbd.Options{Conf: c.Conf, User: c.User, Pool: c.Pool, Agent: "tgttest", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	im, err := st.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: "golden", SizeBytes: 64 << 20, Source: store.Source{Kind: store.SourceBlank}})
	if err != nil {
		t.Fatal(err)
	}
	_, img, _ := store.ParseRBDPath(im.Path)
	// Golden bytes (before any clone: images are immutable), then the
	// node's own writes on its disk.
	c.Admin(t, "qemu-io", "-f", "raw", "-c", "write -P 0x42 0 8M", "rbd:"+c.Pool+"/"+img+":conf="+c.Conf)
	d, err := st.Clone(ctx, "default", "golden", "node-01", "uid-1")
	if err != nil {
		t.Fatal(err)
	}
	_, disk, _ := store.ParseRBDPath(d.Path)
	c.Admin(t, "qemu-io", "-f", "raw", "-c", "write -P 0x17 40M 1M", "rbd:"+c.Pool+"/"+disk+":conf="+c.Conf)
	t.Cleanup(func() {
		for _, f := range []func() error{
			func() error { return st.DeleteDisk(ctx, "default", "node-01") },
			func() error { return st.DeleteImage(ctx, "default", "golden") },
		} {
			if err := f(); err != nil {
				t.Error(err)
			}
		}
	})

	m, portals := startTgtd(t, 1, withRBD)
	drv := m.Driver()
	tg := target.Target{
		IQN: testPrefix + "rbd-node-01", BackingPath: d.Path, SizeBytes: d.SizeBytes,
		Initiators: []string{testPrefix + "initiator.rbd-node-01"}, Portals: portals, Serial: target.Serial("default", "node-01"),
	}
	if err := drv.Ensure(ctx, tg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := drv.Delete(ctx, tg.IQN); err != nil {
			t.Error(err)
		}
	})
	list, err := drv.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range list {
		if got.IQN == tg.IQN && !target.SameConfig(got, tg) {
			t.Errorf("List = %v, want %v", got, tg)
		}
	}
	if err := drv.Ensure(ctx, tg); err != nil { // idempotent
		t.Fatal(err)
	}

	want := sha(t, exportRBD(t, c, d.Path))
	got := sha(t, readISCSI(t, portals[0], tg.IQN, tg.Initiators[0], drv.LUN()))
	if got != want {
		t.Errorf("the node's initiator reads sha256 %s, rbd export says %s", got, want)
	}
	right := initiator{name: tg.Initiators[0], portal: portals[0], iqn: tg.IQN, lun: drv.LUN()}
	wrong := right
	wrong.name = testPrefix + "initiator.intruder"
	if !right.canLogIn(t) {
		t.Errorf("the node's initiator cannot log in")
	}
	if wrong.canLogIn(t) {
		t.Errorf("an initiator outside the ACL logged in to an RBD-backed target")
	}
	// The disk is open while served: the store refuses to remove it.
	if err := st.DeleteDisk(ctx, "default", "node-01"); err == nil || !strings.Contains(err.Error(), "still open") {
		t.Errorf("DeleteDisk of a served disk: %v, want an error that says it is still open", err)
	}
}

func exportRBD(t *testing.T, c *cephtest.Cluster, path string) string {
	t.Helper()
	pool, img, _ := store.ParseRBDPath(path)
	out := filepath.Join(t.TempDir(), "export.raw")
	c.Admin(t, "rbd", "export", "--no-progress", pool+"/"+img, out)
	return out
}

// readISCSI copies the whole LUN to a file through a real initiator
// (qemu-img's libiscsi driver) logged in as initiator.
func readISCSI(t *testing.T, portal, iqn, initiator string, lun int) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "iscsi.raw")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%d,initiator-name=%s", portal, iqn, lun, initiator)
	if b, err := exec.CommandContext(ctx, "qemu-img", "convert", "-O", "raw", "--image-opts", opts, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert from %s: %v: %s", opts, err, b)
	}
	return out
}

func sha(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
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

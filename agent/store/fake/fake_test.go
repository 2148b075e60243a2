package fake_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/store/fake"
	"github.com/sanboot/sanboot/agent/store/storetest"
)

func newStore(t *testing.T, capacity int64) *fake.Store {
	t.Helper()
	s, err := fake.New(fake.Options{Root: "/var/lib/sanboot", CapacityBytes: capacity})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return newStore(t, 1<<40) })
}

func TestNewValidates(t *testing.T) {
	for _, o := range []fake.Options{
		{Root: "relative", CapacityBytes: 1},
		{Root: "/a/../b", CapacityBytes: 1},
		{Root: "/var/lib/sanboot", CapacityBytes: 0},
	} {
		if _, err := fake.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func TestPathsAndEverySourceKind(t *testing.T) {
	s := newStore(t, 1<<40)
	ctx := context.Background()
	sources := []store.Source{
		{Kind: store.SourceBlank},
		{Kind: store.SourceUpload, UploadID: "u1", SHA256: "ab"},
		{Kind: store.SourceURL, URL: "https://example.org/x.raw"},
		{Kind: store.SourceSnapshot, Node: "node-01"},
		{Kind: store.SourceCopy, Image: "golden"},
	}
	for i, src := range sources {
		name := "img-" + string(src.Kind)
		im, err := s.EnsureImage(ctx, store.ImageSpec{Project: "p", Name: name, SizeBytes: int64(i+1) << 20, Source: src})
		if err != nil {
			t.Fatalf("%s: %v", src.Kind, err)
		}
		if im.Source != src {
			t.Errorf("%s: recorded source %+v", src.Kind, im.Source)
		}
		if want := "/var/lib/sanboot/images/p/" + name + ".raw"; im.Path != want {
			t.Errorf("image path %q, want %q", im.Path, want)
		}
	}
	d, err := s.Clone(ctx, "p", "img-blank", "node-01", "")
	if err != nil {
		t.Fatal(err)
	}
	if d.Path != "/var/lib/sanboot/disks/p/node-01.raw" || d.CloneMode != store.CloneFake {
		t.Errorf("disk %+v", d)
	}
}

// The fake counts space as a thin store would: blank images and clones use
// nothing, imported images their size.
func TestThinAccounting(t *testing.T) {
	s := newStore(t, 100<<20)
	ctx := context.Background()
	free := func() int64 {
		c, err := s.Capacity(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c.FreeBytes
	}
	if _, err := s.EnsureImage(ctx, store.ImageSpec{Project: "p", Name: "blank", SizeBytes: 80 << 20, Source: store.Source{Kind: store.SourceBlank}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} { // 3 x 80 MiB thin clones in 100 MiB
		if _, err := s.Clone(ctx, "p", "blank", n, ""); err != nil {
			t.Fatal(err)
		}
	}
	if f := free(); f != 100<<20 {
		t.Errorf("free after blank image and clones = %d, want %d", f, 100<<20)
	}
	url := store.ImageSpec{Project: "p", Name: "url", SizeBytes: 60 << 20, Source: store.Source{Kind: store.SourceURL, URL: "http://x/y"}}
	if _, err := s.EnsureImage(ctx, url); err != nil {
		t.Fatal(err)
	}
	if f := free(); f != 40<<20 {
		t.Errorf("free after a 60 MiB import = %d, want %d", f, 40<<20)
	}
	if _, err := s.Clone(ctx, "p", "url", "d", ""); !errors.Is(err, store.ErrNoSpace) {
		t.Errorf("60 MiB clone with 40 MiB free: %v, want ErrNoSpace", err)
	}
	url.Name = "url2"
	if _, err := s.EnsureImage(ctx, url); !errors.Is(err, store.ErrNoSpace) {
		t.Errorf("60 MiB import with 40 MiB free: %v, want ErrNoSpace", err)
	}
	if err := s.DeleteImage(ctx, "p", "url"); err != nil {
		t.Fatal(err)
	}
	if f := free(); f != 100<<20 {
		t.Errorf("free after deleting the import = %d", f)
	}
}

func TestBeforeCloneHook(t *testing.T) {
	boom := errors.New("boom")
	s, err := fake.New(fake.Options{Root: "/r", CapacityBytes: 1 << 30, CloneMode: store.CloneCopy,
		BeforeClone: func(ctx context.Context, project, node string) error { return boom }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.EnsureImage(ctx, store.ImageSpec{Project: "p", Name: "i", SizeBytes: 512, Source: store.Source{Kind: store.SourceBlank}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Clone(ctx, "p", "i", "n", ""); !errors.Is(err, boom) {
		t.Fatalf("Clone: %v, want the hook's error", err)
	}
	if s.CloneMode() != store.CloneCopy || s.Clones() != 0 {
		t.Errorf("mode %s clones %d", s.CloneMode(), s.Clones())
	}
}

package filestore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/store/filestore"
	"github.com/sanboot/sanboot/internal/looptest"
)

var ctx = context.Background()

// sources is a test Opener: url sources named "test://<key>" read from the
// reader its func makes.
type sources struct {
	mu     sync.Mutex
	m      map[string]func() io.Reader
	opened int
}

func (s *sources) add(key string, r func() io.Reader) store.Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]func() io.Reader{}
	}
	s.m[key] = r
	return store.Source{Kind: store.SourceURL, URL: "test://" + key}
}

func (s *sources) open(_ context.Context, src store.Source) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opened++
	f, ok := s.m[strings.TrimPrefix(src.URL, "test://")]
	if !ok {
		return nil, fmt.Errorf("no test source %q", src.URL)
	}
	return io.NopCloser(f()), nil
}

func (s *sources) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened
}

type opts struct {
	src *sources
	log *slog.Logger
}

func newStore(t testing.TB, root string, o opts) *filestore.Store {
	t.Helper()
	fo := filestore.Options{Root: root, Log: o.log}
	if fo.Log == nil {
		fo.Log = slog.New(slog.DiscardHandler)
	}
	if o.src != nil {
		fo.Open = o.src.open
	}
	s, err := filestore.New(fo)
	if err != nil {
		t.Fatalf("filestore.New(%s): %v", root, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mountStore mounts a loop file system and returns a store root in it.
func mountStore(t testing.TB, fs looptest.FS, size int64) string {
	t.Helper()
	return filepath.Join(looptest.Mount(t, fs, size), "store")
}

// randomData returns n pseudo-random bytes (fast, seeded, reproducible).
func randomData(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// patterned returns a reader of size bytes, zero except for 1 MiB of
// random data at every offset in at.
func patterned(size int64, at ...int64) io.Reader {
	var rs []io.Reader
	var off int64
	for i, a := range at {
		rs = append(rs, io.LimitReader(zeros{}, a-off), randomData(uint64(i+1), 1<<20))
		off = a + 1<<20
	}
	rs = append(rs, io.LimitReader(zeros{}, size-off))
	return io.MultiReader(rs...)
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func sha(t testing.TB, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fileSHA(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return sha(t, f)
}

// allocated is the space a file takes (st_blocks).
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func syncfs(t testing.TB, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
}

func free(t testing.TB, s *filestore.Store) int64 {
	t.Helper()
	syncfs(t, s.Root())
	c, err := s.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c.FreeBytes
}

// entries lists a directory's names ("" for a missing directory).
func entries(t testing.TB, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

func mustImport(t testing.TB, s *filestore.Store, src *sources, name string, size int64, r func() io.Reader) store.Image {
	t.Helper()
	im, err := s.EnsureImage(ctx, store.ImageSpec{Project: "default", Name: name, SizeBytes: size, Source: src.add(name, r)})
	if err != nil {
		t.Fatalf("import %s: %v", name, err)
	}
	return im
}

// errAfter reads n bytes from r, then fails.
type errAfter struct {
	r io.Reader
	n int64
}

func (e *errAfter) Read(b []byte) (int, error) {
	if e.n <= 0 {
		return 0, fmt.Errorf("connection reset (test)")
	}
	if int64(len(b)) > e.n {
		b = b[:e.n]
	}
	n, err := e.r.Read(b)
	e.n -= int64(n)
	return n, err
}

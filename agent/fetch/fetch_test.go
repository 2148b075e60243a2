package fetch_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/sanboot/sanboot/agent/fetch"
	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/agent/store/filestore"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/apiserver"
	"github.com/sanboot/sanboot/controlplane/staging"
	"github.com/sanboot/sanboot/internal/cptest"
	"github.com/sanboot/sanboot/internal/etcdtest"
)

const member = "cp1"

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i/977)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// cp is a real etcd and a real API server (staging uploads in a temp
// directory) on loopback (cptest.StartAPI). The member registers the address agents use:
// the server's own, or a proxy in front of it.
type cp struct {
	cli  *clientv3.Client
	api  sanbootv1.SanbootClient
	addr string
	// offsets of every ReadUpload the server answered.
	mu      sync.Mutex
	offsets []int64
}

func startCP(t *testing.T, viaProxy bool) (*cp, *etcdtest.Proxy) {
	t.Helper()
	c := &cp{}
	log := cptest.Log(t)
	area, err := staging.Open(filepath.Join(t.TempDir(), "uploads"), staging.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	record := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if strings.HasSuffix(info.FullMethod, "/ReadUpload") {
			ss = &recordingStream{ServerStream: ss, c: c}
		}
		return h(srv, ss)
	}
	var proxy *etcdtest.Proxy
	a := cptest.StartAPI(t, cptest.Options{
		Config:  apiserver.Config{Log: log, Member: member, Uploads: area},
		NoLoops: true, Register: true,
		GRPC: []grpc.ServerOption{grpc.ChainStreamInterceptor(record)},
		Advertise: func(addr string) string {
			if !viaProxy {
				return addr
			}
			proxy = etcdtest.NewProxy(t, addr)
			return proxy.Addr
		},
	})
	c.cli, c.api, c.addr = a.Client, a.API, a.Addr
	return c, proxy
}

type recordingStream struct {
	grpc.ServerStream
	c *cp
}

func (r *recordingStream) RecvMsg(m any) error {
	err := r.ServerStream.RecvMsg(m)
	if req, ok := m.(*sanbootv1.ReadUploadRequest); ok && err == nil {
		r.c.mu.Lock()
		r.c.offsets = append(r.c.offsets, req.GetOffset())
		r.c.mu.Unlock()
	}
	return err
}

func (c *cp) upload(t *testing.T, data []byte) *sanbootv1.UploadImageResponse {
	t.Helper()
	st, err := c.api.UploadImage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Header{Header: &sanbootv1.UploadHeader{SizeBytes: int64(len(data))}}})
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 256<<10)
		st.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Chunk{Chunk: rest[:n]}})
		rest = rest[n:]
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func uploadSource(r *sanbootv1.UploadImageResponse) store.Source {
	return store.Source{Kind: store.SourceUpload, UploadID: r.UploadId, SHA256: r.Sha256, Member: r.Member}
}

// The filestore imports an upload through the Fetcher: the bytes come
// from the member's API over loopback gRPC, size and sha256 checked.
func TestUploadIsFetchedIntoTheStore(t *testing.T) {
	c, _ := startCP(t, false)
	data := pattern(5<<20 + 512)
	resp := c.upload(t, data)
	f := fetch.New(fetch.Config{Client: c.cli, Log: cptest.Log(t)})

	st, err := filestore.New(filestore.Options{Root: t.TempDir(), Open: f.Open, Log: cptest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	im, err := st.EnsureImage(context.Background(), store.ImageSpec{Project: "default", Name: "img", SizeBytes: resp.SizeBytes, Source: uploadSource(resp)})
	if err != nil {
		t.Fatal(err)
	}
	if im.SHA256 != sha(data) || im.SizeBytes != int64(len(data)) || im.Source.Member != member {
		t.Fatalf("image %+v, want sha256 %s, %d bytes, from member %s", im, sha(data), len(data), member)
	}
}

func TestUploadFetchErrors(t *testing.T) {
	c, _ := startCP(t, false)
	f := fetch.New(fetch.Config{Client: c.cli, Log: cptest.Log(t)})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		src  store.Source
		msg  string
	}{
		{"collected", store.Source{Kind: store.SourceUpload, UploadID: strings.Repeat("a", 32), Member: member}, "import the image again"},
		{"member gone", store.Source{Kind: store.SourceUpload, UploadID: strings.Repeat("a", 32), Member: "cp9"}, "not registered"},
		{"no member", store.Source{Kind: store.SourceUpload, UploadID: strings.Repeat("a", 32)}, "names no control-plane member"},
		{"blank", store.Source{Kind: store.SourceBlank}, "nothing to fetch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := f.Open(ctx, tc.src)
			if err == nil {
				rc.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Open: %v, want an error saying %q", err, tc.msg)
			}
		})
	}
}

// The connection to the member breaks mid-stream: the fetch goes on from
// the byte it reached, not from the start.
func TestUploadFetchResumesAtTheOffsetReached(t *testing.T) {
	c, proxy := startCP(t, true)
	data := pattern(8 << 20)
	resp := c.upload(t, data)
	f := fetch.New(fetch.Config{Client: c.cli, RetryWait: 10 * time.Millisecond, Log: cptest.Log(t)})
	rc, err := f.Open(context.Background(), uploadSource(resp))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	head := make([]byte, 3<<20)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	proxy.Pause() // cuts the connection
	proxy.Resume()
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(head, rest...); !bytes.Equal(got, data) {
		t.Fatalf("fetched %d bytes (sha256 %s), want the %d uploaded (%s)", len(got), sha(got), len(data), sha(data))
	}
	c.mu.Lock()
	offsets := append([]int64(nil), c.offsets...)
	c.mu.Unlock()
	if len(offsets) < 2 || offsets[0] != 0 {
		t.Fatalf("ReadUpload offsets %v: want 0, then a resume", offsets)
	}
	for _, off := range offsets[1:] {
		if off < int64(len(head)) || off >= int64(len(data)) {
			t.Fatalf("resumed at %d, before the %d bytes already read (offsets %v)", off, len(head), offsets)
		}
	}
}

// flakyServer serves data; with ranges it honours Range requests; the
// first response is cut after cut bytes (the connection closed).
type flakyServer struct {
	data   []byte
	ranges bool
	cut    int

	mu       sync.Mutex
	requests []string // Range header of each request
}

func (s *flakyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Header.Get("Range"))
	first := len(s.requests) == 1
	s.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, "/missing") {
		http.NotFound(w, r)
		return
	}
	if !s.ranges {
		r.Header.Del("Range")
	}
	if !first || s.cut == 0 {
		http.ServeContent(w, r, "img.raw", time.Time{}, bytes.NewReader(s.data))
		return
	}
	// Announce everything, send cut bytes, then drop the connection.
	w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
	w.WriteHeader(http.StatusOK)
	w.Write(s.data[:s.cut])
	w.(http.Flusher).Flush()
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestURLFetch(t *testing.T) {
	data := pattern(3<<20 + 512)
	for _, tc := range []struct {
		name      string
		ranges    bool
		cut       int
		wantRange string // of the second request
	}{
		{"whole", true, 0, ""},
		{"resumed with a range", true, 1 << 20, "bytes=1048576-"},
		{"resumed without ranges", false, 1 << 20, "bytes=1048576-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &flakyServer{data: data, ranges: tc.ranges, cut: tc.cut}
			hs := httptest.NewServer(s)
			defer hs.Close()
			f := fetch.New(fetch.Config{RetryWait: 10 * time.Millisecond, Log: cptest.Log(t)})
			rc, err := f.Open(context.Background(), store.Source{Kind: store.SourceURL, URL: hs.URL + "/img.raw"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("fetched %d bytes (%v), want the %d served", len(got), err, len(data))
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if tc.cut == 0 {
				if len(s.requests) != 1 {
					t.Fatalf("requests %q, want one", s.requests)
				}
				return
			}
			if len(s.requests) != 2 || s.requests[0] != "" || s.requests[1] != tc.wantRange {
				t.Fatalf("requests' Range headers %q, want none then %q", s.requests, tc.wantRange)
			}
		})
	}
}

func TestURLFetchOf404FailsAtOnce(t *testing.T) {
	s := &flakyServer{data: pattern(512)}
	hs := httptest.NewServer(s)
	defer hs.Close()
	f := fetch.New(fetch.Config{Log: cptest.Log(t)})
	_, err := f.Open(context.Background(), store.Source{Kind: store.SourceURL, URL: hs.URL + "/missing"})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Open: %v, want a 404 error", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

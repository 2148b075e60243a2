// Package fetch gets the bytes of an image's upload or url source for the
// agent's store: Fetcher.Open is a filestore.Options.Open.
//
//   - upload: the bytes are staged on the control-plane member named by
//     the source. The agent reads that member's API addresses from etcd
//     (api.MemberKey) and streams them with ReadUpload. The agent opens
//     the connection: nothing connects to an agent.
//   - url: an HTTP GET of the URL, by the agent itself.
//
// A stream that breaks is resumed where it broke (ReadUpload's offset, an
// HTTP Range request; a server without ranges is read again from the
// start and the bytes already had are skipped), up to Config.Retries times
// in a row with a growing wait. Errors that another try cannot fix (the
// upload was garbage-collected, an HTTP 404) end the fetch at once.
//
// The store checks the size and sha256 of what it reads, writes it to a
// temp file, fsyncs and renames it: an interrupted fetch leaves no image.
package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/agent/members"
	"github.com/sanboot/sanboot/agent/store"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// Config is what a Fetcher works with.
type Config struct {
	// Client reads members' registrations (api.MemberKey); needed for
	// upload sources.
	Client *clientv3.Client
	// HTTP fetches url sources (nil: a client without a time limit, since
	// images are large; the context still cancels it).
	HTTP *http.Client
	// TLS secures connections to members (package tlsconfig; nil:
	// plaintext).
	TLS *tls.Config
	// Retries is how many times in a row a broken stream is resumed
	// before the fetch fails (default 5; progress resets the count).
	Retries int
	// RetryWait is the first wait before a resume, doubled each time up
	// to 30 s (default 500 ms).
	RetryWait time.Duration
	Log       *slog.Logger
}

// Fetcher opens upload and url sources.
type Fetcher struct {
	cfg Config
}

// New returns a Fetcher.
func New(cfg Config) *Fetcher {
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{}
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = 500 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.Log = cfg.Log.With("component", "fetch")
	return &Fetcher{cfg: cfg}
}

// Open returns the bytes of src from its start. It fails at once when the
// first request fails; later breaks are resumed. Close the reader.
func (f *Fetcher) Open(ctx context.Context, src store.Source) (io.ReadCloser, error) {
	var open openAt
	var what string
	switch src.Kind {
	case store.SourceUpload:
		if f.cfg.Client == nil {
			return nil, errors.New("this agent has no etcd client to find control-plane members: upload sources cannot be fetched")
		}
		if src.Member == "" {
			return nil, errors.New("the upload source names no control-plane member: create the image again with sanbootctl image import")
		}
		open = func(ctx context.Context, off int64) (io.ReadCloser, error) { return f.openUpload(ctx, src, off) }
		what = fmt.Sprintf("upload %s on control-plane member %q", src.UploadID, src.Member)
	case store.SourceURL:
		open = func(ctx context.Context, off int64) (io.ReadCloser, error) { return f.openURL(ctx, src.URL, off) }
		what = src.URL
	default:
		return nil, fmt.Errorf("there is nothing to fetch for a %s source", src.Kind)
	}
	ctx, cancel := context.WithCancel(ctx)
	rc, err := open(ctx, 0)
	if err != nil {
		cancel()
		return nil, err
	}
	return &resumer{ctx: ctx, cancel: cancel, open: open, cur: rc, what: what, cfg: &f.cfg}, nil
}

// openAt opens a source at a byte offset.
type openAt func(ctx context.Context, off int64) (io.ReadCloser, error)

// permanentError marks a failure another try cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// resumer reads a source and opens it again at the offset reached when
// its stream breaks.
type resumer struct {
	ctx    context.Context
	cancel context.CancelFunc
	open   openAt
	cur    io.ReadCloser
	off    int64
	fails  int
	what   string
	cfg    *Config
}

func (r *resumer) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			rc, err := r.open(r.ctx, r.off)
			if err != nil {
				if err := r.failed(err); err != nil {
					return 0, err
				}
				continue
			}
			r.cur = rc
		}
		n, err := r.cur.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.fails = 0
			if errors.Is(err, io.EOF) {
				return n, nil // EOF again on the next Read
			}
			if err == nil {
				return n, nil
			}
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			return n, io.EOF
		}
		r.cur.Close()
		r.cur = nil
		if err := r.failed(err); err != nil {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// failed decides whether to try again after err: it returns nil after
// waiting, or the error to give up with.
func (r *resumer) failed(err error) error {
	if isPermanent(err) || r.ctx.Err() != nil {
		return fmt.Errorf("fetch %s at byte %d: %w", r.what, r.off, err)
	}
	r.fails++
	if r.fails > r.cfg.Retries {
		return fmt.Errorf("fetch %s: gave up after %d tries in a row at byte %d: %w", r.what, r.fails, r.off, err)
	}
	wait := min(r.cfg.RetryWait<<(r.fails-1), 30*time.Second)
	r.cfg.Log.Warn("fetch broke; resuming", "source", r.what, "offset", r.off, "try", r.fails, "in", wait, "err", err)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.ctx.Done():
		return fmt.Errorf("fetch %s at byte %d: %w", r.what, r.off, r.ctx.Err())
	}
}

func (r *resumer) Close() error {
	r.cancel()
	if r.cur != nil {
		return r.cur.Close()
	}
	return nil
}

// openUpload starts ReadUpload at off and waits for its first answer, so
// that a missing upload is an error of the open.
func (f *Fetcher) openUpload(ctx context.Context, src store.Source, off int64) (io.ReadCloser, error) {
	conn, err := members.Dial(ctx, f.cfg.Client, src.Member, f.cfg.TLS)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := sanbootv1.NewAgentDataClient(conn).ReadUpload(sctx, &sanbootv1.ReadUploadRequest{UploadId: src.UploadID, Offset: off})
	sr := &streamReader{stream: stream, close: func() { cancel(); conn.Close() }}
	if err == nil {
		sr.buf, err = sr.recv()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		sr.Close()
		return nil, uploadError(src, err)
	}
	sr.eof = errors.Is(err, io.EOF)
	return sr, nil
}

// uploadError says what a ReadUpload failure means, and marks those that
// another try cannot fix.
func uploadError(src store.Source, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if !retryable(st.Code()) {
		return permanent(fmt.Errorf("control-plane member %q: %s", src.Member, st.Message()))
	}
	return fmt.Errorf("control-plane member %q: %s: %s", src.Member, st.Code(), st.Message())
}

// retryable reports whether a gRPC failure may pass: a broken connection,
// a member shutting down, an overloaded one.
func retryable(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.Canceled, codes.Aborted, codes.ResourceExhausted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// streamReader turns a ReadUpload stream into an io.Reader.
type streamReader struct {
	stream grpc.ServerStreamingClient[sanbootv1.Chunk]
	buf    []byte
	eof    bool
	close  func()
}

func (s *streamReader) recv() ([]byte, error) {
	for {
		c, err := s.stream.Recv()
		if err != nil {
			return nil, err
		}
		if len(c.GetData()) > 0 {
			return c.GetData(), nil
		}
	}
}

func (s *streamReader) Read(p []byte) (int, error) {
	if len(s.buf) == 0 {
		if s.eof {
			return 0, io.EOF
		}
		b, err := s.recv()
		if errors.Is(err, io.EOF) {
			s.eof = true
			return 0, io.EOF
		}
		if err != nil {
			if st, ok := status.FromError(err); ok && !retryable(st.Code()) {
				return 0, permanent(err)
			}
			return 0, err
		}
		s.buf = b
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *streamReader) Close() error {
	s.close()
	return nil
}

// openURL GETs url from byte off (a Range request when off > 0).
func (f *Fetcher) openURL(ctx context.Context, url string, off int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, permanent(fmt.Errorf("url %q: %w: fix the image's source url", url, err))
	}
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	resp, err := f.cfg.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	switch {
	case off > 0 && resp.StatusCode == http.StatusPartialContent:
		if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, "bytes "+strconv.FormatInt(off, 10)+"-") {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s from byte %d: the server answered Content-Range %q", url, off, cr)
		}
		return resp.Body, nil
	case resp.StatusCode == http.StatusOK:
		if off > 0 { // no ranges: skip what was read already
			if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
				resp.Body.Close()
				return nil, fmt.Errorf("GET %s: skip the %d bytes already read: %w", url, off, err)
			}
		}
		return resp.Body, nil
	}
	resp.Body.Close()
	err = fmt.Errorf("GET %s: %s: check the url and that the server serves it", url, resp.Status)
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
		return nil, permanent(err)
	}
	return nil, err
}

package apiserver

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// Lists page: a response holds at most page_size objects and at most
// pageBytes of them, far below gRPC's default 4 MiB message limit, and
// next_page_token says where the next page starts. Every page is read at
// the revision of the first, so that the pages add up to one list.
const (
	// MaxPageSize is the largest page_size; a larger one is lowered to it.
	MaxPageSize = 1000
	pageBytes   = 2 << 20
)

// pager is one page's place in a list.
type pager struct {
	size  int    // 0: every object
	rev   int64  // read at this revision (0: now)
	after string // the last key of the previous page (metaKey)
}

// revision is the revision a page was read at: the first page's (read
// is the revision of the read's response header).
func (p pager) revision(read int64) int64 {
	if p.rev != 0 {
		return p.rev
	}
	return read
}

// readOpts read at the pager's revision.
func (p pager) readOpts() []clientv3.OpOption {
	if p.rev == 0 {
		return nil
	}
	return []clientv3.OpOption{clientv3.WithRev(p.rev)}
}

func newPager(req *sanbootv1.ListRequest) (pager, error) {
	p := pager{size: int(req.GetPageSize())}
	if p.size < 0 {
		return p, status.Errorf(codes.InvalidArgument, "page_size: %d is negative: use 1 to %d, or 0 for every object", p.size, MaxPageSize)
	}
	p.size = min(p.size, MaxPageSize)
	tok := req.GetPageToken()
	if tok == "" {
		return p, nil
	}
	bad := status.Error(codes.InvalidArgument, "page_token: not a token this server gave: pass next_page_token as it came, or none for the first page")
	if len(tok) > 1024 {
		return p, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return p, bad
	}
	revText, after, ok := strings.Cut(string(raw), "/")
	rev, err := strconv.ParseInt(revText, 10, 64)
	if !ok || err != nil || rev <= 0 || after == "" {
		return p, bad
	}
	if p.size == 0 {
		return p, status.Error(codes.InvalidArgument, "page_token without page_size: give the page_size of the first page")
	}
	p.rev, p.after = rev, after
	return p, nil
}

// page cuts items (sorted by key, read at revision rev) to the pager's
// page, and returns the token of the next page ("" after the last).
func page[T proto.Message](p pager, items []T, key func(T) string, rev int64, what string) ([]T, string, error) {
	start := 0
	if p.after != "" {
		for start < len(items) && key(items[start]) <= p.after {
			start++
		}
	}
	end, bytes := start, 0
	for end < len(items) && (p.size == 0 || end-start < p.size) {
		n := proto.Size(items[end])
		if end > start && bytes+n > pageBytes {
			break
		}
		bytes += n
		end++
	}
	if end == len(items) {
		return items[start:end], "", nil
	}
	if p.size == 0 {
		return nil, "", status.Errorf(codes.ResourceExhausted, "the %s selected are %d, more than fit in one response: "+
			"ask for pages (page_size, then next_page_token; sanbootctl does)", what, len(items))
	}
	if p.rev != 0 {
		rev = p.rev
	}
	return items[start:end], pageToken(rev, key(items[end-1])), nil
}

// pageToken is the token of the page after the one that ended with key,
// of a list read at rev.
func pageToken(rev int64, key string) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d/%s", rev, key))
}

// metaKey orders objects as lists sort them, by project then name: NUL
// sorts before every character of a name.
func metaKey(m *sanbootv1.ObjectMeta) string { return m.GetProject() + "\x00" + m.GetName() }

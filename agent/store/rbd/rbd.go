package rbd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sanboot/sanboot/agent/store"
	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/internal/keylock"
)

const (
	imagePrefix   = "img."
	diskPrefix    = "disk."
	tmpPrefix     = "tmp."
	retiredPrefix = "old."
	// baseSnap is the protected snapshot of every image that its disks
	// are cloned from.
	baseSnap = "sanboot"
	metaKey  = "sanboot.v1"
	// DefaultMaxCloneDepth bounds an image's chain of parents (as
	// ceph-csi's soft limit does).
	DefaultMaxCloneDepth = 4
)

// Opener returns the bytes of an upload or url source; the store reads
// exactly the image's size from it and closes it. (filestore.Opener has
// the same shape; the agent passes the same fetcher to either store.)
type Opener func(ctx context.Context, src store.Source) (io.ReadCloser, error)

// Options configure a Store.
type Options struct {
	// Conf is the cluster's ceph.conf (mon_host, keyring), e.g.
	// /etc/ceph/ceph.conf.
	Conf string
	// User is the agent's cephx user without "client.", e.g. sanboot. It
	// needs only `profile rbd` on Pool (mon 'profile rbd' osd 'profile
	// rbd pool=POOL').
	User string
	// Keyring is the user's keyring when the conf does not name it ("":
	// Ceph's default search, /etc/ceph/ceph.client.USER.keyring, ...).
	Keyring string
	// Pool is the RBD pool (rbd pool init done). Agents that share it
	// share its images and disks.
	Pool string
	// Agent names the temp images this store makes (tmp.<agent>.*), so
	// that agents sharing the pool never remove each other's work in
	// progress. An api.ValidateName label.
	Agent string
	// MaxCloneDepth bounds an image's chain of parents: a deeper image
	// is flattened in the background (and before it is published past
	// twice as deep); 0 means DefaultMaxCloneDepth.
	MaxCloneDepth int
	// Open fetches upload and url sources; nil refuses them.
	Open Opener
	// RBD and Ceph are the tools, "rbd" and "ceph" (in PATH) if empty.
	RBD, Ceph string
	// CallTimeout bounds one rbd call (not imports); 2 min if zero.
	CallTimeout time.Duration
	// Log receives what the store cleans up; slog.Default() if nil.
	Log *slog.Logger
}

// Store is the RBD store. Its methods are safe for concurrent use.
type Store struct {
	c        cli
	agent    string
	maxDepth int
	open     Opener
	log      *slog.Logger
	locks    keylock.Locks
	replicas int64
	domain   string

	flats  flattens
	images imageCache

	capMu   sync.Mutex
	capAt   time.Time // when capLast was read
	capLast store.Capacity
}

// capacityMaxAge is how long Clone's free-space check reuses a reading of
// ceph df: the ceph tool is a Python program that takes hundreds of
// milliseconds per call, more than the clone itself.
const capacityMaxAge = 10 * time.Second

var _ store.Store = (*Store)(nil)

// New checks the options, reaches the cluster (the pool must exist and the
// user must be able to list it), removes what this agent's crashed steps
// left (tmp.<agent>.*) and deleted images whose clones are gone.
func New(ctx context.Context, opts Options) (*Store, error) {
	var errs []error
	if !filepath.IsAbs(opts.Conf) {
		errs = append(errs, fmt.Errorf("ceph conf %q: use an absolute path such as /etc/ceph/ceph.conf", opts.Conf))
	}
	if opts.User == "" || strings.HasPrefix(opts.User, "client.") || strings.ContainsAny(opts.User, " \t/") {
		errs = append(errs, fmt.Errorf("cephx user %q: give the name without \"client.\", e.g. sanboot", opts.User))
	}
	if opts.Pool == "" || strings.ContainsAny(opts.Pool, " \t/@") {
		errs = append(errs, fmt.Errorf("pool %q: give the name of an RBD pool (ceph osd pool create POOL; rbd pool init POOL)", opts.Pool))
	}
	if err := api.ValidateName("agent", opts.Agent); err != nil {
		errs = append(errs, err)
	}
	if opts.MaxCloneDepth < 0 || opts.MaxCloneDepth > 64 {
		errs = append(errs, fmt.Errorf("max clone depth %d: use 1 to 64 (0: %d)", opts.MaxCloneDepth, DefaultMaxCloneDepth))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.MaxCloneDepth == 0 {
		opts.MaxCloneDepth = DefaultMaxCloneDepth
	}
	if opts.RBD == "" {
		opts.RBD = "rbd"
	}
	if opts.Ceph == "" {
		opts.Ceph = "ceph"
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 2 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Open == nil {
		opts.Open = func(_ context.Context, src store.Source) (io.ReadCloser, error) {
			return nil, fmt.Errorf("this store has no way to fetch %s sources: use a blank, copy or snapshot source", src.Kind)
		}
	}
	s := &Store{
		c:     cli{rbd: opts.RBD, ceph: opts.Ceph, conf: opts.Conf, user: opts.User, keyring: opts.Keyring, pool: opts.Pool, timeout: opts.CallTimeout},
		agent: opts.Agent, maxDepth: opts.MaxCloneDepth, open: opts.Open,
		log: opts.Log.With("store", "rbd", "pool", opts.Pool),
	}
	var size struct {
		Size int64 `json:"size"`
	}
	if err := s.c.cephJSON(ctx, &size, "osd", "pool", "get", opts.Pool, "size"); err != nil {
		return nil, fmt.Errorf("rbd store: read the replica count of pool %s as client.%s: %w: check the pool, the user's caps and the keyring", opts.Pool, opts.User, err)
	}
	s.replicas = max(size.Size, 1)
	var fsid struct {
		FSID string `json:"fsid"`
	}
	if err := s.c.cephJSON(ctx, &fsid, "fsid"); err != nil || fsid.FSID == "" {
		return nil, fmt.Errorf("rbd store: read the cluster's fsid: %v", err)
	}
	s.domain = "rbd:" + fsid.FSID + "/" + opts.Pool
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	s.log.Info("store ready", "cloneMode", store.CloneRBD, "maxCloneDepth", s.maxDepth)
	return s, nil
}

// start removes this agent's temp images and collects deleted ones.
func (s *Store) start(ctx context.Context) error {
	names, err := s.names(ctx)
	if err != nil {
		return fmt.Errorf("rbd store: list pool %s: %w", s.c.pool, err)
	}
	mine := tmpPrefix + s.agent + "."
	for _, n := range names {
		switch {
		case strings.HasPrefix(n, mine):
			s.log.Info("removing an image left by an interrupted step", "image", n)
			if err := s.remove(ctx, n); err != nil {
				return fmt.Errorf("rbd store: %w", err)
			}
		case strings.HasPrefix(n, retiredPrefix):
			if err := s.remove(ctx, n); err != nil {
				return fmt.Errorf("rbd store: %w", err)
			}
		}
	}
	return nil
}

// CloneMode implements store.Store.
func (s *Store) CloneMode() store.CloneMode { return store.CloneRBD }

// Pool is the store's pool.
func (s *Store) Pool() string { return s.c.pool }

// Domain is the store's storage domain, rbd:<cluster fsid>/<pool>: agents
// whose stores have the same domain reach the same disks.
func (s *Store) Domain() string { return s.domain }

// Capacity implements store.Store: the cluster's raw bytes over the pool's
// replica count, and the pool's max_avail (what can still be written to
// it, replication counted). The pool's existence is checked by New.
func (s *Store) Capacity(ctx context.Context) (store.Capacity, error) {
	c, err := s.readCapacity(ctx)
	if err == nil {
		s.capMu.Lock()
		s.capAt, s.capLast = time.Now(), c
		s.capMu.Unlock()
	}
	return c, err
}

// recentCapacity is Capacity, read again only when the last reading is
// older than capacityMaxAge.
func (s *Store) recentCapacity(ctx context.Context) (store.Capacity, error) {
	s.capMu.Lock()
	c, at := s.capLast, s.capAt
	s.capMu.Unlock()
	if !at.IsZero() && time.Since(at) < capacityMaxAge {
		return c, nil
	}
	return s.Capacity(ctx)
}

func (s *Store) readCapacity(ctx context.Context) (store.Capacity, error) {
	var df struct {
		Stats struct {
			Total int64 `json:"total_bytes"`
			Avail int64 `json:"total_avail_bytes"`
		} `json:"stats"`
		Pools []struct {
			Name  string `json:"name"`
			Stats struct {
				MaxAvail int64 `json:"max_avail"`
			} `json:"stats"`
		} `json:"pools"`
	}
	if err := s.c.cephJSON(ctx, &df, "df"); err != nil {
		return store.Capacity{}, fmt.Errorf("rbd store capacity: %w", err)
	}
	// A pool made a moment ago is not in ceph df until its placement
	// groups report: it is empty, so the cluster's free space is its own.
	c := store.Capacity{CapacityBytes: df.Stats.Total / s.replicas, FreeBytes: df.Stats.Avail / s.replicas}
	for _, p := range df.Pools {
		if p.Name == s.c.pool {
			c.FreeBytes = p.Stats.MaxAvail
		}
	}
	c.FreeBytes = min(c.FreeBytes, c.CapacityBytes)
	return c, nil
}

// meta is the image-meta sanboot.v1 of every image and disk, JSON.
type meta struct {
	Kind      string       `json:"kind"` // image or disk
	Name      string       `json:"name"` // the final name (img.* or disk.*)
	SizeBytes int64        `json:"sizeBytes"`
	Source    store.Source `json:"source,omitzero"`    // image
	SHA256    string       `json:"sha256,omitempty"`   // image, when computed
	Flattened bool         `json:"flattened,omitzero"` // image: copied out of its parents (depth bound)
	Image     string       `json:"image,omitempty"`    // disk: the image it was cloned from
	Owner     string       `json:"owner,omitempty"`    // disk: the node record's uid
}

func imageName(project, name string) string { return imagePrefix + project + "." + name }
func diskName(project, node string) string  { return diskPrefix + project + "." + node }

// newTmp names a new temp image of this agent.
func (s *Store) newTmp() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return tmpPrefix + s.agent + "." + hex.EncodeToString(b)
}

// readMeta returns the description of image n; ENOENT when n is missing.
// An image without one (made by hand) has a zero meta.
func (s *Store) readMeta(ctx context.Context, n string) (meta, error) {
	var all map[string]string
	if err := s.c.json(ctx, &all, "image-meta", "list", n); err != nil {
		return meta{}, err
	}
	v, ok := all[metaKey]
	if !ok {
		return meta{}, nil
	}
	var m meta
	if err := json.Unmarshal([]byte(v), &m); err != nil {
		return meta{}, fmt.Errorf("image-meta %s of %s is not sanboot's (%v): remove the key or the image", metaKey, n, err)
	}
	return m, nil
}

func (s *Store) writeMeta(ctx context.Context, n string, m meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = s.c.run(ctx, "image-meta", "set", n, metaKey, string(b))
	return err
}

// names lists the pool's images.
func (s *Store) names(ctx context.Context) ([]string, error) {
	var names []string
	err := s.c.json(ctx, &names, "ls")
	return names, err
}

// publish renames tmp to final; if final exists (made meanwhile by another
// agent or worker) tmp is removed and fs-like EEXIST returned.
func (s *Store) publish(ctx context.Context, tmp, final string) error {
	_, err := s.c.run(ctx, "rename", tmp, final)
	if err == nil {
		// Ceph 16's rename can answer success to the loser of two clients
		// renaming to one name at once and leave its source in place
		// (seen with two agents of one pool): tmp still there, with
		// another id than final, lost the race.
		var t, f imageInfo
		if terr := s.c.json(ctx, &t, "info", tmp); isNotFound(terr) {
			return nil
		} else if terr != nil {
			return fmt.Errorf("check that %s became %s: %w", tmp, final, terr)
		}
		if ferr := s.c.json(ctx, &f, "info", final); ferr != nil || f.ID == t.ID {
			return fmt.Errorf("rename %s to %s answered success, yet %s is still there (final: id %q, %v): the agent removes it when it starts again",
				tmp, final, tmp, f.ID, ferr)
		}
		err = fmt.Errorf("rename %s to %s: %w (another agent made it at the same time)", tmp, final, syscall.EEXIST)
	}
	if rmErr := s.remove(ctx, tmp); rmErr != nil {
		s.log.Warn("could not remove a temp image; the agent removes it when it starts again", "image", tmp, "err", rmErr)
	}
	return err
}

func isNotFound(err error) bool { return errors.Is(err, syscall.ENOENT) }
func isExist(err error) bool    { return errors.Is(err, syscall.EEXIST) }

// notFound turns ENOENT into store.ErrNotFound.
func notFound(what string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Close stops the background flattens (the next EnsureImage of their
// images starts them again) and waits for them. Every other call is its
// own process: nothing else to release.
func (s *Store) Close() error {
	s.flats.stopAll()
	return nil
}

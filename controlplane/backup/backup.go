// Package backup saves and restores the control plane's state with etcd's
// own code: Save streams a snapshot from a running member through the
// maintenance API (go.etcd.io/etcd/client/v3/snapshot) and reads it back
// (etcdutl's snapshot status); Restore builds a new member data directory
// from a snapshot (etcdutl's snapshot restore), bumping the revision and
// marking it compacted so that every watcher (API caches, schedulers,
// agents) relists instead of waiting for revisions that will never come.
package backup

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	clientsnap "go.etcd.io/etcd/client/v3/snapshot"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// Info describes a saved snapshot.
type Info struct {
	Path string
	// Revision is the etcd revision the snapshot holds, Keys how many
	// keys (all revisions) it has, Size its bytes.
	Revision int64
	Keys     int
	Size     int64
	// SHA256 is the file's checksum; Hash is etcd's own (CRC-32C of the
	// database), as `etcdutl snapshot status` prints it.
	SHA256 string
	Hash   uint32
	// Version is etcd's storage version of the snapshot.
	Version string
}

// Save writes a snapshot of the member at endpoints to path (through
// path.part, renamed when complete and verified). tlsConfig, if not nil,
// is the client's mutual TLS: a member's certificate (with TLS etcd's
// authorization is on, and a snapshot needs the root role).
func Save(ctx context.Context, endpoints []string, tlsConfig *tls.Config, path string) (Info, error) {
	lg := zap.NewNop()
	if _, err := os.Stat(path); err == nil {
		return Info{}, fmt.Errorf("%s exists: give a new file name (a backup never overwrites one)", path)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	version, err := clientsnap.SaveWithVersion(ctx, lg, clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: lg, TLS: tlsConfig}, path)
	if err != nil {
		return Info{}, fmt.Errorf("snapshot of the etcd member at %v: %w (is the control plane running, and --endpoints its client URL?)", endpoints, err)
	}
	st, err := snapshot.NewV3(lg).Status(path)
	if err != nil {
		return Info{}, fmt.Errorf("read back snapshot %s: %w", path, err)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return Info{}, err
	}
	return Info{Path: path, Revision: st.Revision, Keys: st.TotalKey, Size: st.TotalSize, SHA256: sum, Hash: st.Hash, Version: version}, nil
}

// Status reads a snapshot file.
func Status(path string) (Info, error) {
	st, err := snapshot.NewV3(zap.NewNop()).Status(path)
	if err != nil {
		return Info{}, fmt.Errorf("%s is not a readable etcd snapshot: %w", path, err)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return Info{}, err
	}
	return Info{Path: path, Revision: st.Revision, Keys: st.TotalKey, Size: st.TotalSize, SHA256: sum, Hash: st.Hash, Version: st.Version}, nil
}

// RestoreConfig says where and as which member to restore.
type RestoreConfig struct {
	// Snapshot is the file Save wrote.
	Snapshot string
	// DataDir is the member's --data-dir. It must not hold a member yet
	// (DataDir/member): move the old one away first. Other content (the
	// uploads directory) is left alone.
	DataDir string
	// Name, PeerURLs and InitialCluster are the member's --name,
	// advertised peer URLs and --initial-cluster, as it will start with.
	Name           string
	PeerURLs       []string
	InitialCluster string
	// RevisionBump is added to the restored revision (default 1e9), which
	// is then marked compacted: see the package comment.
	RevisionBump uint64
}

// ClusterToken is the control plane's etcd --initial-cluster-token.
const ClusterToken = "sanboot"

// Restore makes cfg.DataDir hold a new one-member cluster with the
// snapshot's data.
func Restore(cfg RestoreConfig) error {
	if cfg.RevisionBump == 0 {
		cfg.RevisionBump = 1_000_000_000
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "member")); err == nil {
		return fmt.Errorf("%s already holds an etcd member: stop the control plane and move %s away first (restore never overwrites data)",
			cfg.DataDir, filepath.Join(cfg.DataDir, "member"))
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	// etcdutl wants an empty or missing directory: restore next to the
	// data directory, then move the member in.
	tmp, err := os.MkdirTemp(cfg.DataDir, ".restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "data")
	if err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        cfg.Snapshot,
		Name:                cfg.Name,
		OutputDataDir:       out,
		PeerURLs:            cfg.PeerURLs,
		InitialCluster:      cfg.InitialCluster,
		InitialClusterToken: ClusterToken,
		RevisionBump:        cfg.RevisionBump,
		MarkCompacted:       true,
	}); err != nil {
		return fmt.Errorf("restore %s into %s: %w", cfg.Snapshot, cfg.DataDir, err)
	}
	if err := os.Rename(filepath.Join(out, "member"), filepath.Join(cfg.DataDir, "member")); err != nil {
		return fmt.Errorf("move the restored member into %s: %w", cfg.DataDir, err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("checksum of %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

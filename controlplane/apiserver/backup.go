package apiserver

import (
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/backup"
)

// backupChunk is the size of one streamed piece of a backup.
const backupChunk = 256 << 10

// Backup saves a snapshot of the etcd member to a temporary file (etcd's
// maintenance API), reads it back with etcd's own status code for the
// revision and hashes, then streams the info and the bytes. The temporary
// file goes when the call ends.
func (s *Server) Backup(_ *sanbootv1.BackupRequest, stream sanbootv1.Sanboot_BackupServer) error {
	ctx := stream.Context()
	f, err := os.CreateTemp("", "sanboot-backup-*.db")
	if err != nil {
		return status.Errorf(codes.Internal, "create a temporary file for the snapshot: %v; check the control plane's TMPDIR", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()

	snap, err := s.cli.Snapshot(ctx)
	if err != nil {
		return etcdError(ctx, "snapshot", err)
	}
	_, err = io.Copy(f, snap)
	snap.Close()
	if err != nil {
		return etcdError(ctx, "snapshot", err)
	}
	if err := f.Sync(); err != nil {
		return status.Errorf(codes.Internal, "write the snapshot: %v", err)
	}
	info, err := backup.Status(f.Name())
	if err != nil {
		return status.Errorf(codes.Internal, "read back the snapshot: %v", err)
	}
	if fi, err := f.Stat(); err == nil {
		info.Size = fi.Size() // the bytes that are sent
	}
	s.log.Info("backup", "revision", info.Revision, "bytes", info.Size, "sha256", info.SHA256)
	if err := stream.Send(&sanbootv1.BackupResponse{Part: &sanbootv1.BackupResponse_Info{Info: &sanbootv1.BackupInfo{
		Revision: info.Revision, SizeBytes: info.Size, Sha256: info.SHA256, EtcdHash: info.Hash,
		Keys: int64(info.Keys), Member: s.cfg.Member,
	}}}); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return status.Errorf(codes.Internal, "rewind the snapshot: %v", err)
	}
	buf := make([]byte, backupChunk)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if serr := stream.Send(&sanbootv1.BackupResponse{Part: &sanbootv1.BackupResponse_Chunk{Chunk: buf[:n]}}); serr != nil {
				return serr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return status.Error(codes.Internal, fmt.Sprintf("read the snapshot: %v", err))
		}
	}
}

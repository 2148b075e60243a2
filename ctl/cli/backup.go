package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/bytesize"
)

func newBackupCmd(s *session) *cobra.Command {
	o := &backupOptions{}
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Save every node, image, assignment and secret to an etcd snapshot",
		Long: `Save a snapshot of the control plane's etcd (through etcd's maintenance
API, on the member behind the API endpoint) to FILE, and print its revision
and sha256. FILE is written under a temp name and renamed once its size and
sha256 match what the control plane sent; an existing FILE is never
overwritten.

The snapshot holds CHAP secrets: keep it where you keep secrets. Restore it
on a stopped control plane with

  sanboot-controlplane restore FILE --data-dir DIR

(see docs/operations.md); agents converge on the restored state by
themselves. Image bytes live on the agents and are not in the snapshot.`,
		Example: `  sanbootctl backup /var/backups/sanboot-$(date +%F).db`,
		Args:    exactArgs(1, "backup takes the FILE to write"),
		RunE:    runOptions(s, o),
	}
}

// backupOptions are backup's (options.go).
type backupOptions struct{ file string }

func (o *backupOptions) complete(args []string) error {
	o.file = args[0]
	return nil
}

func (o *backupOptions) validate() error {
	if o.file == "-" {
		return errors.New("backup writes a file (it is verified before it gets its name): give a path, not -")
	}
	return nil
}

// run streams the snapshot into FILE and names it once verified.
func (o *backupOptions) run(ctx context.Context, s *session) error {
	file := o.file
	c, err := s.api()
	if err != nil {
		return err
	}
	out, err := s.exportTarget(file, false)
	if err != nil {
		return err
	}
	defer out.abort()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Backup(ctx, &sanbootv1.BackupRequest{})
	if err != nil {
		return s.rpcError(err)
	}
	var info *sanbootv1.BackupInfo
	h := sha256.New()
	var got int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out.failed(s.rpcError(err))
		}
		if i := msg.GetInfo(); i != nil {
			info = i
			continue
		}
		if info == nil {
			return out.failed(errors.New("the control plane sent bytes before the backup's info: upgrade sanbootctl or the control plane"))
		}
		if err := out.write(msg.GetChunk(), h); err != nil {
			return out.failed(err)
		}
		got += int64(len(msg.GetChunk()))
	}
	if info == nil {
		return out.failed(errors.New("the control plane sent no backup"))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if got != info.GetSizeBytes() || sum != info.GetSha256() {
		return out.failed(fmt.Errorf("the backup arrived damaged: %d bytes with sha256 %s, the control plane sent %d bytes with sha256 %s; try again",
			got, sum, info.GetSizeBytes(), info.GetSha256()))
	}
	if err := out.commit(got); err != nil {
		return out.failed(err)
	}
	fmt.Fprintf(s.env.Stdout, "backup written to %s: revision %d, %d keys, %s, sha256 %s (etcd hash %08x)\n",
		file, info.GetRevision(), info.GetKeys(), bytesize.Format(got), sum, info.GetEtcdHash())
	return nil
}

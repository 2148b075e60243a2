package staging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sanboot/sanboot/api"
)

// qemuInfo is the part of `qemu-img info --output=json` that matters.
type qemuInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
	FullBacking     string `json:"full-backing-filename"`
	FormatSpecific  struct {
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	} `json:"format-specific"`
}

// convert turns the qcow2 file src into a raw temp file next to it and
// returns its name. A qcow2 that names a backing file or an external data
// file is refused: qemu-img would read that file from this host into the
// image.
func (a *Area) convert(ctx context.Context, src string) (string, error) {
	bin, err := exec.LookPath(a.qemuImg)
	if err != nil {
		return "", ErrNoQemuImg
	}
	out, err := run(ctx, bin, "info", "--output=json", "-f", "qcow2", src)
	if err != nil {
		return "", fmt.Errorf("the upload starts like a qcow2 image but qemu-img cannot read it (%v): upload a valid qcow2 or a raw image: %w", err, ErrInvalid)
	}
	var info qemuInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("read qemu-img info's output: %w", err)
	}
	if info.BackingFilename != "" || info.FullBacking != "" || info.FormatSpecific.Data.DataFile != "" {
		return "", fmt.Errorf("the qcow2 image refers to another file (backing file %q, data file %q): flatten it first "+
			"(qemu-img convert -O qcow2 in.qcow2 flat.qcow2) and upload that: %w",
			info.BackingFilename, info.FormatSpecific.Data.DataFile, ErrInvalid)
	}
	if info.VirtualSize <= 0 || info.VirtualSize > api.MaxImageSize {
		return "", fmt.Errorf("the qcow2 image has virtual size %d bytes; images are 512 bytes to 64 TiB: %w", info.VirtualSize, ErrInvalid)
	}
	dst := filepath.Join(a.dir, tmpPrefix+newID())
	a.log.Info("converting a qcow2 upload to raw", "virtualSize", info.VirtualSize)
	if _, err := run(ctx, bin, "convert", "-q", "-f", "qcow2", "-O", "raw", src, dst); err != nil {
		os.Remove(dst)
		if strings.Contains(err.Error(), "No space left") {
			return "", fmt.Errorf("convert the qcow2 upload to raw (%d bytes): %w: %w", info.VirtualSize, err, ErrNoSpace)
		}
		return "", fmt.Errorf("convert the qcow2 upload to raw: %w: %w", err, ErrInvalid)
	}
	f, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("fsync the converted image: %w", err)
	}
	return dst, nil
}

// run runs a program (never through a shell) and returns its stdout; a
// failure carries its stderr.
func run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		var ee *exec.ExitError
		if errors.As(err, &ee) && msg != "" {
			return nil, fmt.Errorf("%s %s: %s", filepath.Base(bin), args[0], msg)
		}
		return nil, fmt.Errorf("%s %s: %w", filepath.Base(bin), args[0], err)
	}
	return stdout.Bytes(), nil
}

package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/bytesize"
)

// uploadChunk is the size of one UploadImage message (the API accepts
// messages up to gRPC's default 4 MiB).
const uploadChunk = 1 << 20

type importFlags struct {
	size        string
	sha256      string
	fromURL     string
	wait        bool
	timeout     time.Duration
	spec        sanbootv1.ImageSpec
	labels      []string
	description string
}

func newImageImportCmd(s *session) *cobra.Command {
	o := &importOptions{}
	f := &o.importFlags
	cmd := &cobra.Command{
		Use:   "import NAME (FILE | - | --from-url URL)",
		Short: "Create an image from a file, stdin or a URL",
		Long: `Create an image from the bytes of a disk image.

From FILE or - (stdin): the bytes stream to the control plane in chunks, which
stages them on its disk (fsynced, checksummed); then the image is created and
every agent (or those named by --agents) fetches them from that control-plane
member. A qcow2 file is converted to raw on the control plane (it needs
qemu-img there: Debian's qemu-utils). On a terminal a progress bar shows the
bytes sent, the rate and the time left; otherwise nothing is drawn.

From --from-url http(s)://...: nothing is uploaded; each agent downloads the
URL itself. The size is --size, else the server's Content-Length (HTTP HEAD).
--sha256 makes the agents check what they got.

An image is Ready when every wanted agent holds it with the same sha256
("get image NAME -o wide" shows each agent's replica). Images never change:
importing over an existing name is refused (exit code 5).

Images are whole 512-byte sectors. The control plane keeps a staged upload
until every wanted agent has it, or 24 hours if no image refers to it.`,
		Example: `  # Upload a raw or qcow2 file to every agent and wait until they all hold it
  sanbootctl image import debian-13 debian-13.qcow2 --wait

  # From a pipe, to two agents; the size lets the progress bar show the time left
  xz -dc debian-13.raw.xz | sanbootctl image import debian-13 - --size 10GiB --agents storage-1,storage-2

  # Let the agents download it themselves, and check its checksum
  sanbootctl image import ubuntu-24 --from-url https://images.example/ubuntu-24.raw \
      --sha256 3f1c...e9`,
		Args: func(cmd *cobra.Command, args []string) error {
			if f.fromURL != "" {
				return exactArgs(1, "with --from-url, image import takes only the NAME")(cmd, args)
			}
			return exactArgs(2, "image import takes a NAME and a FILE (or - for stdin), or a NAME and --from-url URL")(cmd, args)
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return nil, cobra.ShellCompDirectiveDefault // FILE
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: runOptions(s, o),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.size, "size", "", "size of the image (with - or --from-url: default unknown, or the URL's Content-Length); with a FILE it must match")
	fl.StringVar(&f.sha256, "sha256", "", "sha256 of the bytes sent (FILE, -) or served (--from-url): checked before the image is accepted")
	fl.StringVar(&f.fromURL, "from-url", "", "http(s) URL each agent downloads the image from itself")
	fl.StringSliceVar(&f.spec.Agents, "agents", nil, "agents that hold the image, comma-separated (default: every agent)")
	fl.BoolVar(&f.spec.Protected, "protected", false, "refuse deletion of the image")
	fl.StringVar(&f.description, "description", "", "free text")
	fl.StringVar(&f.spec.EfiBootPath, "efi-boot-path", "", efiBootPathHelp)
	fl.StringArrayVar(&f.labels, "label", nil, "label key=value (repeatable)")
	fl.BoolVar(&f.wait, "wait", false, "wait until every wanted agent holds the image")
	fl.DurationVar(&f.timeout, "timeout", defaultWaitTimeout, "how long to wait with --wait, after the upload (exit code 3 when it passes)")
	return cmd
}

// importOptions are image import's (options.go).
type importOptions struct {
	importFlags
	name, file string // NAME, and FILE or - (none with --from-url)
	labelMap   map[string]string
	sizeBytes  int64 // --size, 0 if not given
}

func (o *importOptions) complete(args []string) error {
	o.name = args[0]
	if len(args) > 1 {
		o.file = args[1]
	}
	return nil
}

// validate checks what it can before anything is sent (gigabytes, maybe).
func (o *importOptions) validate() error {
	if err := api.ValidateName("NAME", o.name); err != nil {
		return withCode(ExitUsage, err)
	}
	labels, err := parseLabels(o.labels)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	o.labelMap = labels
	if o.size != "" {
		if o.sizeBytes, err = bytesize.Parse(o.size); err != nil {
			return withCode(ExitUsage, fmt.Errorf("--size: %w", err))
		}
	}
	if p := o.spec.EfiBootPath; p != "" {
		if err := api.ValidateEFIBootPath("--efi-boot-path", p); err != nil {
			return withCode(ExitUsage, err)
		}
	}
	if o.sha256 != "" && (len(o.sha256) != 64 || strings.Trim(o.sha256, "0123456789abcdef") != "") {
		return usageErrorf("--sha256 %q: give the 64 lowercase hex digits of a sha256", o.sha256)
	}
	return nil
}

// run uploads FILE (or has the agents download the URL), creates the
// image and, with --wait, waits until every wanted agent holds it.
func (o *importOptions) run(ctx context.Context, s *session) error {
	name, labels, size, f := o.name, o.labelMap, o.sizeBytes, &o.importFlags
	c, project, err := s.apiAndProject()
	if err != nil {
		return err
	}
	// Refuse before sending gigabytes: images never change.
	switch _, err := c.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name}); status.Code(err) {
	case codes.NotFound:
	case codes.OK:
		return withCode(ExitConflict, fmt.Errorf("image/%s already exists in project %q: images do not change; remove it first or import under another name", name, project))
	default:
		return s.rpcError(err)
	}

	spec := &f.spec
	spec.Description = f.description
	var note string
	if f.fromURL != "" {
		u, err := url.Parse(f.fromURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usageErrorf("--from-url %q: give an http:// or https:// URL", f.fromURL)
		}
		if size == 0 {
			if size, err = headSize(ctx, f.fromURL); err != nil {
				return err
			}
		}
		spec.SizeBytes = size
		spec.Source = &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Url{Url: &sanbootv1.URLSource{Url: f.fromURL, Sha256: f.sha256}}}
		note = "the agents download " + f.fromURL
	} else {
		up, err := s.upload(ctx, c, project, o.file, size, f.sha256)
		if err != nil {
			return err
		}
		spec.SizeBytes = up.GetSizeBytes()
		spec.Source = &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Upload{Upload: &sanbootv1.UploadSource{
			UploadId: up.GetUploadId(), Sha256: up.GetSha256(), Member: up.GetMember()}}}
		note = fmt.Sprintf("%s, sha256 %s", bytesize.Format(up.GetSizeBytes()), up.GetSha256())
		if up.GetFormat() == "qcow2" {
			note += ", converted from qcow2"
		}
	}
	if spec.SizeBytes%512 != 0 {
		return fmt.Errorf("the image is %d bytes, not a whole number of 512-byte sectors: images are disks; pad it (truncate -s %d)",
			spec.SizeBytes, (spec.SizeBytes/512+1)*512)
	}
	resp, err := c.PutImage(ctx, &sanbootv1.PutImageRequest{
		Mode:  sanbootv1.PutMode_PUT_MODE_CREATE,
		Image: &sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Project: project, Name: name, Labels: labels}, Spec: spec},
	})
	if err != nil {
		return s.rpcError(err)
	}
	fmt.Fprintf(s.env.Stdout, "image/%s %s (%s)\n", name, putResult(resp.GetResult()), note)
	if !f.wait {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	_, err = s.waitImage(ctx, project, name, f.timeout)
	return err
}

// headSize asks an HTTP server for the size of what it serves.
func headSize(ctx context.Context, u string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return 0, withCode(ExitUsage, fmt.Errorf("--from-url: %w", err))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("HEAD %s to learn the image's size: %w; give --size", u, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("HEAD %s to learn the image's size: %s; check the URL, or give --size", u, resp.Status)
	}
	if resp.ContentLength <= 0 {
		return 0, fmt.Errorf("HEAD %s did not say the image's size (no Content-Length): give --size", u)
	}
	return resp.ContentLength, nil
}

// upload streams FILE (or stdin for "-") to the API and returns the staged
// upload. The sha256 of what was sent is checked against the staged one
// (for a raw image they are the same bytes).
func (s *session) upload(ctx context.Context, c sanbootv1.SanbootClient, project, file string, size int64, sum string) (*sanbootv1.UploadImageResponse, error) {
	var in io.Reader = s.env.Stdin
	what := "stdin"
	if file != "-" {
		fh, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		fi, err := fh.Stat()
		if err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() {
			if size != 0 && size != fi.Size() {
				return nil, usageErrorf("--size %d does not match the %d bytes of %s: leave --size out for a file", size, fi.Size(), file)
			}
			if fi.Size() == 0 {
				return nil, fmt.Errorf("%s is empty", file)
			}
			size = fi.Size()
		}
		in, what = fh, file
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.UploadImage(ctx)
	if err != nil {
		return nil, s.rpcError(err)
	}
	if err := stream.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Header{
		Header: &sanbootv1.UploadHeader{Project: project, SizeBytes: size, Sha256: sum}}}); err != nil {
		_, err = stream.CloseAndRecv()
		return nil, s.rpcError(err)
	}
	bar := s.newProgress(size, "uploading "+filepath.Base(what))
	h := sha256.New()
	buf := make([]byte, uploadChunk)
	var sent int64
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			if err := stream.Send(&sanbootv1.UploadImageRequest{Part: &sanbootv1.UploadImageRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				// The server ended the stream; its status says why.
				bar.done(false)
				_, err = stream.CloseAndRecv()
				return nil, s.rpcError(err)
			}
			h.Write(buf[:n])
			bar.Write(buf[:n])
			sent += int64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			bar.done(false)
			cancel() // nothing is kept of an interrupted upload
			return nil, fmt.Errorf("read %s after %d bytes: %w; nothing was kept", what, sent, rerr)
		}
	}
	bar.done(true)
	if sent == 0 {
		cancel()
		return nil, fmt.Errorf("%s is empty", what)
	}
	if s.env.Terminal != nil && s.env.Terminal(s.env.Stderr) {
		fmt.Fprintf(s.env.Stderr, "sent %s; the control plane is checking and staging it\n", bytesize.Format(sent))
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, s.rpcError(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); resp.GetFormat() != "qcow2" && resp.GetSha256() != got {
		return nil, fmt.Errorf("the control plane staged sha256 %s but sanbootctl sent %s: the bytes were damaged on the way; import again", resp.GetSha256(), got)
	}
	return resp, nil
}

func newImageExportCmd(s *session) *cobra.Command {
	o := &exportOptions{}
	cmd := &cobra.Command{
		Use:   "export NAME (FILE | -)",
		Short: "Write an image's bytes to a file or stdout, checksum verified",
		Long: `Write an image's bytes to FILE, or to stdout with -.

The bytes come from a Ready replica on a live agent: the agent pushes them to
the control plane, which relays them (nothing connects to an agent). They are
checked against the image's recorded sha256 and size. FILE is written under a
temp name next to it and renamed only once verified: an interrupted or
damaged export leaves no FILE behind (exit code 1). With -, damaged bytes have
already gone to stdout: the exit code says so. Images from blank or snapshot
sources record no sha256; their size is still checked and the sha256 printed.

Zero blocks become holes in FILE (it is sparse). An existing FILE is
refused unless --force.`,
		Example: `  sanbootctl image export debian-13 debian-13.raw
  sanbootctl image export debian-13 - | xz > debian-13.raw.xz`,
		Args:              exactArgs(2, "image export takes a NAME and a FILE (or - for stdout)"),
		ValidArgsFunction: s.completeImages,
		RunE:              runOptions(s, o),
	}
	cmd.Flags().BoolVar(&o.force, "force", false, "overwrite FILE if it exists")
	return cmd
}

// exportOptions are image export's (options.go).
type exportOptions struct {
	name, file string // NAME, and FILE or -
	force      bool
}

func (o *exportOptions) complete(args []string) error {
	o.name, o.file = args[0], args[1]
	return nil
}

func (o *exportOptions) validate() error { return nil }

// run writes the image's verified bytes to FILE or stdout.
func (o *exportOptions) run(ctx context.Context, s *session) error {
	name, file, force := o.name, o.file, o.force
	c, project, err := s.apiAndProject()
	if err != nil {
		return err
	}
	im, err := c.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
	if err != nil {
		return s.rpcError(err)
	}
	size, want := im.GetSpec().GetSizeBytes(), im.GetStatus().GetSha256()
	out, err := s.exportTarget(file, force)
	if err != nil {
		return err
	}
	defer out.abort()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.ExportImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
	if err != nil {
		return s.rpcError(err)
	}
	bar := s.newProgress(size, "exporting "+name)
	h := sha256.New()
	var got int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			bar.done(false)
			return out.failed(s.rpcError(err))
		}
		if err := out.write(chunk.GetData(), h); err != nil {
			bar.done(false)
			return out.failed(err)
		}
		bar.Write(chunk.GetData())
		got += int64(len(chunk.GetData()))
	}
	bar.done(true)
	sum := hex.EncodeToString(h.Sum(nil))
	if got != size {
		return out.failed(fmt.Errorf("image/%s: received %d bytes, the image has %d", name, got, size))
	}
	if want != "" && sum != want {
		return out.failed(fmt.Errorf("image/%s: the bytes received have sha256 %s, the image records %s: they are damaged", name, sum, want))
	}
	if err := out.commit(size); err != nil {
		return out.failed(err)
	}
	msg := fmt.Sprintf("image/%s exported to %s (%s, sha256 %s verified)", name, out.name(), bytesize.Format(got), sum)
	if want == "" {
		msg = fmt.Sprintf("image/%s exported to %s (%s, sha256 %s; the image records no sha256 to verify it against)", name, out.name(), bytesize.Format(got), sum)
	}
	w := s.env.Stdout
	if file == "-" {
		w = s.env.Stderr
	}
	fmt.Fprintln(w, msg)
	return nil
}

// exportOut is where an export's bytes go: stdout, or a temp file next
// to FILE that is renamed to it once verified.
type exportOut struct {
	w     io.Writer
	f     *os.File // the temp file; nil for stdout
	dest  string
	off   int64
	done  bool
	stdio bool
}

func (s *session) exportTarget(file string, force bool) (*exportOut, error) {
	if file == "-" {
		return &exportOut{w: s.env.Stdout, stdio: true}, nil
	}
	if fi, err := os.Stat(file); err == nil {
		if !force {
			return nil, fmt.Errorf("%s exists: use --force to overwrite it", file)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file: export to a file and copy it with dd", file)
		}
	}
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".partial-*")
	if err != nil {
		return nil, err
	}
	return &exportOut{w: f, f: f, dest: file}, nil
}

var zeroBlock = make([]byte, 1<<20)

// write appends data, feeding h; zero blocks of a file become holes.
func (o *exportOut) write(data []byte, h hash.Hash) error {
	h.Write(data)
	if o.f != nil && len(data) <= len(zeroBlock) && bytes.Equal(data, zeroBlock[:len(data)]) {
		o.off += int64(len(data))
		return nil
	}
	var err error
	if o.f != nil {
		_, err = o.f.WriteAt(data, o.off)
	} else {
		_, err = o.w.Write(data)
	}
	o.off += int64(len(data))
	if err != nil {
		return fmt.Errorf("write %s: %w", o.name(), err)
	}
	return nil
}

// commit sizes, fsyncs and renames the temp file into place.
func (o *exportOut) commit(size int64) error {
	if o.f == nil {
		o.done = true
		return nil
	}
	if err := o.f.Truncate(size); err != nil {
		return err
	}
	if err := o.f.Sync(); err != nil {
		return err
	}
	if err := o.f.Close(); err != nil {
		return err
	}
	if err := os.Rename(o.f.Name(), o.dest); err != nil {
		return err
	}
	o.done = true
	return nil
}

// failed removes the temp file and returns err, saying what happened to
// the output.
func (o *exportOut) failed(err error) error {
	o.abort()
	if o.stdio {
		return fmt.Errorf("%w; the bytes already written to stdout are incomplete or damaged: discard them", err)
	}
	return fmt.Errorf("%w; nothing was written to %s", err, o.dest)
}

func (o *exportOut) abort() {
	if o.done || o.f == nil {
		return
	}
	o.done = true
	o.f.Close()
	os.Remove(o.f.Name())
}

func (o *exportOut) name() string {
	if o.stdio {
		return "stdout"
	}
	return o.dest
}

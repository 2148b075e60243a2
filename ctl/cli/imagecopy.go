package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

func copySource(image string) *sanbootv1.ImageSource {
	return &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Copy{Copy: &sanbootv1.CopySource{Image: image}}}
}

func newImageCpCmd(s *session) *cobra.Command {
	o := &imageCpOptions{}
	cmd := &cobra.Command{
		Use:     "cp SRC DST",
		Aliases: []string{"copy"},
		Short:   "Copy an image to a new name",
		Long: `Create image DST as a copy of image SRC: the same size, on the same agents.
Each agent that holds SRC reflinks it into DST (copies it, on file systems
without reflink); an agent that does not hold SRC yet waits for it. DST has
SRC's labels and description unless --label or --description are given. A
copy of a snapshot is a snapshot of the same parent.

With --wait, the command polls DST until it is Ready (exit 1 if it fails, 3
after --timeout).`,
		Example: `  sanbootctl image cp debian-13 debian-13-test
  sanbootctl image cp debian-13 debian-13-test --wait -o yaml`,
		Args:              exactArgs(2, "image cp takes SRC and DST"),
		ValidArgsFunction: s.completeFirstImage,
		RunE:              runOptions(s, o),
	}
	o.register(cmd, "the copy")
	return cmd
}

// imageCpOptions are image cp's (options.go).
type imageCpOptions struct{ deriveOptions }

// run copies the image, with its labels and description unless the flags
// set them.
func (o *imageCpOptions) run(ctx context.Context, s *session) error {
	base, err := s.getImage(ctx, o.from)
	if err != nil {
		return err
	}
	return s.deriveImage(ctx, o.to, copySource(o.from), base, o.imageOpts)
}

func (s *session) getImage(ctx context.Context, name string) (*sanbootv1.Image, error) {
	c, project, err := s.apiAndProject()
	if err != nil {
		return nil, err
	}
	im, err := c.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
	if err != nil {
		return nil, s.rpcError(err)
	}
	return im, nil
}

func newImageMvCmd(s *session) *cobra.Command {
	o := &imageMvOptions{}
	cmd := &cobra.Command{
		Use:     "mv OLD NEW",
		Aliases: []string{"move", "rename"},
		Short:   "Rename an image (copy it, then remove the old one)",
		Long: `Rename image OLD to NEW the way the old system did: copy OLD to NEW (as
image cp does, with OLD's labels and description), wait until NEW is Ready,
then remove OLD.

An image that nodes use, or that is the parent of snapshots, cannot be
removed, so mv refuses it before doing anything and names them (exit code
5); so it does for a protected image. If NEW fails or --timeout passes, OLD is
kept. If OLD cannot be removed at the end (say, a node started using it
meanwhile), NEW exists and OLD still does, and the error says so. Running mv
again after an interruption carries on where it stopped.`,
		Example: `  sanbootctl image mv debian-13-rc debian-13
  sanbootctl image mv scratch scratch-old --timeout 30m -o json`,
		Args:              exactArgs(2, "image mv takes OLD and NEW"),
		ValidArgsFunction: s.completeFirstImage,
		RunE:              runOptions(s, o),
	}
	o.register(cmd, "NEW")
	_ = cmd.Flags().MarkHidden("wait") // mv always waits
	cmd.Flags().Lookup("timeout").Usage = "how long the whole move may take, waiting for NEW included (exit code 3 when it passes)"
	return cmd
}

// imageMvOptions are image mv's (options.go): from is OLD, to NEW.
type imageMvOptions struct{ deriveOptions }

func (o *imageMvOptions) validate() error {
	if err := o.deriveOptions.validate(); err != nil {
		return err
	}
	if o.from == o.to {
		return usageErrorf("image mv: OLD and NEW are both %q", o.from)
	}
	o.wait = true // mv always waits
	return nil
}

// run copies OLD to NEW, waits until NEW is Ready, then removes OLD.
func (o *imageMvOptions) run(ctx context.Context, s *session) error {
	oldName, newName := o.from, o.to
	ctx, cancel := context.WithTimeout(ctx, o.timeout) // the whole move
	defer cancel()
	c, project, err := s.apiAndProject()
	if err != nil {
		return err
	}
	old, err := s.getImage(ctx, oldName)
	if err != nil {
		return err
	}
	if old.GetSpec().GetProtected() {
		return withCode(ExitConflict, fmt.Errorf("image/%s is protected, so it cannot be removed and mv would only copy it: "+
			"apply it with spec.protected=false first, or use image cp", oldName))
	}
	list, err := listImages(ctx, c, &sanbootv1.ListRequest{Project: project})
	if err != nil {
		return s.rpcError(err)
	}
	var users []string
	if nodes := old.GetStatus().GetUsedBy(); len(nodes) > 0 {
		users = append(users, "nodes "+strings.Join(nodes, ", "))
	}
	var snaps []string
	for _, im := range list.GetImages() {
		if im.GetSpec().GetParent() == oldName && im.GetMetadata().GetName() != newName {
			snaps = append(snaps, im.GetMetadata().GetName())
		}
	}
	if len(snaps) > 0 {
		users = append(users, "snapshots "+strings.Join(snaps, ", "))
	}
	if len(users) > 0 {
		return withCode(ExitConflict, fmt.Errorf("image/%s is used by %s, so it cannot be removed: delete them first, or use image cp",
			oldName, strings.Join(users, " and by ")))
	}

	im, err := s.createDerived(ctx, newName, copySource(oldName), old, o.imageOpts)
	if err != nil {
		return fmt.Errorf("%w; image/%s was kept (run mv again to carry on, or remove image/%s)", err, oldName, newName)
	}
	if _, err := c.DeleteImage(ctx, &sanbootv1.DeleteRequest{Project: project, Name: oldName, Revision: old.GetMetadata().GetRevision()}); err != nil {
		err = s.rpcError(err)
		return withCode(exitCode(err), fmt.Errorf("image/%s was created and is Ready, but image/%s could not be removed: %w; "+
			"both exist now: remove image/%s with sanbootctl image rm %s", newName, oldName, err, oldName, oldName))
	}
	if o.output == formatText {
		fmt.Fprintf(s.env.Stdout, "image/%s deleted\nimage/%s moved to image/%s\n", oldName, oldName, newName)
	}
	return s.printImageResult(im, o.output)
}

// completeFirstImage completes an image name for the first argument only.
func (s *session) completeFirstImage(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return s.completeImages(cmd, args, toComplete)
}

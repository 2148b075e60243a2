package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/printers"
	"github.com/sanboot/sanboot/internal/bytesize"
)

func newSnapshotCmd(s *session) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "snapshot",
		Aliases: []string{"snapshots", "snap"},
		Short:   "Turn a node's disk into an image; list and remove such images",
		Long: `A snapshot is an image made from a node's current disk: the agent that holds
the disk fsyncs it and reflinks it (copies it, on file systems without
reflink) into a new image. Nodes can be provisioned from it at once. The
snapshot is a file of its own: deleting the node later does not affect it.

Its parent is the image the node was cloned from; that image cannot be
removed while snapshots of it exist.`,
		Example: `  sanbootctl snapshot create node-01 node-01-before-upgrade --wait
  sanbootctl snapshot ls
  sanbootctl provision node-02 --image node-01-before-upgrade
  sanbootctl snapshot rm node-01-before-upgrade`,
	}
	cmd.AddCommand(newSnapshotCreateCmd(s), newSnapshotLsCmd(s), newSnapshotRmCmd(s))
	return cmd
}

// actionFormats are the -o values of commands that change things.
const formatText = "text"

func checkActionFormat(f string) error {
	switch f {
	case formatText, printers.FormatJSON, printers.FormatYAML:
		return nil
	}
	return usageErrorf("-o %q: use text, json or yaml", f)
}

func addActionOutput(cmd *cobra.Command, out *string) {
	cmd.Flags().StringVarP(out, "output", "o", formatText, "output format: text, json or yaml (json and yaml print the resulting object)")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{formatText, printers.FormatJSON, printers.FormatYAML}, cobra.ShellCompDirectiveNoFileComp))
}

// imageOpts are the settings shared by commands that create an image from
// another object.
type imageOpts struct {
	output      string
	wait        bool
	timeout     time.Duration
	description string
	labels      []string
}

func newSnapshotCreateCmd(s *session) *cobra.Command {
	o := &snapshotCreateOptions{}
	cmd := &cobra.Command{
		Use:   "create NODE IMAGE",
		Short: "Make image IMAGE from the current disk of NODE",
		Long: `Make image IMAGE from the current disk of NODE. The node must exist, be placed
on an agent and not be being deleted. The control plane fills in the rest:
the image lives on the node's agent only (spec.agents), has the size of the
node's image, and has that image as its parent (spec.parent).

The agent takes the snapshot when it sees the image: it fsyncs the node's
disk and reflinks it. With --wait, the command polls the image until it is
Ready (exit 1 if it fails, 3 after --timeout). A node provisioned from the
image is placed on that agent.`,
		Example: `  # Snapshot node-01 into image golden-2 and wait until it can be provisioned
  sanbootctl snapshot create node-01 golden-2 --wait

  # In project lab, printing the image as JSON
  sanbootctl snapshot create gpu-01 gpu-base -p lab -o json`,
		Args:              exactArgs(2, "snapshot create takes NODE and IMAGE"),
		ValidArgsFunction: s.completeFirstNode,
		RunE:              runOptions(s, o),
	}
	o.register(cmd, "the snapshot")
	return cmd
}

// deriveOptions are the options of the commands that make an image from
// another object (snapshot create, image cp, image mv): the names of what
// it is made from and of the new image, and imageOpts.
type deriveOptions struct {
	imageOpts
	from, to string
}

func (o *deriveOptions) complete(args []string) error {
	o.from, o.to = args[0], args[1]
	return nil
}

func (o *deriveOptions) validate() error { return checkActionFormat(o.output) }

// snapshotCreateOptions are snapshot create's (options.go): from is the
// node.
type snapshotCreateOptions struct{ deriveOptions }

// run makes the image from the node's disk.
func (o *snapshotCreateOptions) run(ctx context.Context, s *session) error {
	src := &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: o.from}}}
	return s.deriveImage(ctx, o.to, src, nil, o.imageOpts)
}

func (o *imageOpts) register(cmd *cobra.Command, what string) {
	f := cmd.Flags()
	addActionOutput(cmd, &o.output)
	f.BoolVar(&o.wait, "wait", false, "wait until "+what+" is Ready (polls the image)")
	f.DurationVar(&o.timeout, "timeout", defaultWaitTimeout, "how long to wait with --wait (exit code 3 when it passes); without --wait, the deadline of the calls")
	f.StringVar(&o.description, "description", "", "free text")
	f.StringArrayVar(&o.labels, "label", nil, "label key=value (repeatable)")
}

// deriveImage creates image name from src (a snapshot or a copy; the API
// server resolves size, agents and parent), prints what it did and, with
// o.wait, waits until it is Ready. base gives labels and description that
// the flags do not set.
func (s *session) deriveImage(ctx context.Context, name string, src *sanbootv1.ImageSource, base *sanbootv1.Image, o imageOpts) error {
	im, err := s.createDerived(ctx, name, src, base, o)
	if err != nil {
		return err
	}
	return s.printImageResult(im, o.output)
}

// createDerived is deriveImage without the final output: it prints the
// "created" line (text output only) and waits if asked.
func (s *session) createDerived(ctx context.Context, name string, src *sanbootv1.ImageSource, base *sanbootv1.Image, o imageOpts) (*sanbootv1.Image, error) {
	labels, err := parseLabels(o.labels)
	if err != nil {
		return nil, withCode(ExitUsage, err)
	}
	if labels == nil {
		labels = base.GetMetadata().GetLabels()
	}
	desc := o.description
	if desc == "" {
		desc = base.GetSpec().GetDescription()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, project, err := s.apiAndProject()
	if err != nil {
		return nil, err
	}
	resp, err := c.PutImage(ctx, &sanbootv1.PutImageRequest{
		Mode: sanbootv1.PutMode_PUT_MODE_CREATE,
		Image: &sanbootv1.Image{
			Metadata: &sanbootv1.ObjectMeta{Project: project, Name: name, Labels: labels},
			Spec:     &sanbootv1.ImageSpec{Source: src, Description: desc},
		},
	})
	if err != nil {
		return nil, s.rpcError(err)
	}
	im := resp.GetImage()
	if o.output == formatText {
		fmt.Fprintf(s.env.Stdout, "image/%s %s: %s\n", name, putResult(resp.GetResult()), describeDerived(im))
	}
	if !o.wait {
		return im, nil
	}
	im, err = s.waitImage(ctx, project, name, o.timeout)
	if err != nil {
		return im, err
	}
	if o.output == formatText {
		fmt.Fprintf(s.env.Stdout, "image/%s ready\n", name)
	}
	return im, nil
}

// describeDerived says what an image was made from and where it lives.
func describeDerived(im *sanbootv1.Image) string {
	spec := im.GetSpec()
	where := "on every agent"
	switch a := spec.GetAgents(); len(a) {
	case 0:
	case 1:
		where = "on agent " + a[0]
	default:
		where = "on agents " + strings.Join(a, ", ")
	}
	out := printers.DescribeSource(spec.GetSource())
	if p := spec.GetParent(); p != "" {
		out += ", parent image/" + p
	}
	return out + ", " + bytesize.Format(spec.GetSizeBytes()) + ", " + where
}

// printImageResult prints the resulting image as JSON or YAML; text output
// was printed along the way.
func (s *session) printImageResult(im *sanbootv1.Image, format string) error {
	if format == formatText {
		return nil
	}
	return printers.Printer{W: s.env.Stdout, Format: format, Now: s.env.Now(), Single: true}.StructuredOut("images", printers.ProtoList([]*sanbootv1.Image{im}))
}

func newSnapshotLsCmd(s *session) *cobra.Command {
	return newListSnapshotsCmd(s, "ls [NAME...]", []string{"list"}, "List images made from snapshots", `  sanbootctl snapshot ls
  sanbootctl snapshot ls -A -o wide
  sanbootctl snapshot ls -w`)
}

// newListSnapshotsCmd builds "snapshot ls" and "get snapshots".
func newListSnapshotsCmd(s *session, use string, aliases []string, short, example string) *cobra.Command {
	return newGetKindCmd(s, snapshotKind(), cmdText{use: use, aliases: aliases, short: short, example: example,
		long: `List the images made from snapshots (and copies of them): NAME, the NODE
whose disk it was, its PARENT image, SIZE, PHASE and AGE. -o wide adds the
agents, the replicas and the nodes that use it; json and yaml print the
images as {"images": [...]}. With -w, snapshots are printed again as
they change, until interrupted.`}, s.completeImages)
}

func notSnapshot(im *sanbootv1.Image) error {
	name := im.GetMetadata().GetName()
	return withCode(ExitConflict, fmt.Errorf("image/%s is not a snapshot (its source is %s): use sanbootctl image rm %s or image ls",
		name, printers.DescribeSource(im.GetSpec().GetSource()), name))
}

func newSnapshotRmCmd(s *session) *cobra.Command {
	o := &snapshotRmOptions{}
	cmd := &cobra.Command{
		Use:     "rm IMAGE...",
		Aliases: []string{"delete"},
		Short:   "Remove images made from snapshots",
		Long: `Remove images made from snapshots, with the rules of image rm: a protected
image, one that nodes use or one that is the parent of other snapshots is
refused, and the refusal names them (exit code 5). An image that is not a
snapshot is refused too (exit code 5): remove it with image rm.`,
		Example: `  sanbootctl snapshot rm golden-2
  sanbootctl snapshot rm snap-1 snap-2 -o json`,
		Args:              minArgs(1, "name at least one IMAGE"),
		ValidArgsFunction: s.completeImages,
		RunE:              runOptions(s, o),
	}
	addActionOutput(cmd, &o.output)
	cmd.Flags().BoolVar(&o.ignoreNotFound, "ignore-not-found", false, "treat images that do not exist as removed")
	return cmd
}

// snapshotRmOptions are snapshot rm's (options.go).
type snapshotRmOptions struct {
	nameArgs
	output         string
	ignoreNotFound bool
}

func (o *snapshotRmOptions) validate() error { return checkActionFormat(o.output) }

// run removes each named image that is a snapshot.
func (o *snapshotRmOptions) run(ctx context.Context, s *session) error {
	names, ignoreNotFound, output := o.names, o.ignoreNotFound, o.output
	c, project, err := s.apiAndProject()
	if err != nil {
		return err
	}
	var errs []error
	var deleted []string
	for _, name := range names {
		im, err := c.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
		if err == nil && !api.IsSnapshot(im) {
			err = notSnapshot(im)
		}
		if err == nil {
			// Only the image just checked: if it was replaced meanwhile, the
			// API refuses (exit code 5).
			_, err = c.DeleteImage(ctx, &sanbootv1.DeleteRequest{Project: project, Name: name, Revision: im.GetMetadata().GetRevision()})
		}
		if err != nil {
			err = s.rpcError(err)
			if ignoreNotFound && exitCode(err) == ExitNotFound {
				continue
			}
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, name)
		if output == formatText {
			fmt.Fprintf(s.env.Stdout, "image/%s deleted\n", name)
		}
	}
	if err := s.printDeleted(output, project, deleted); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// printDeleted prints, as JSON or YAML, {"deleted": [{"project": P,
// "name": N}, ...]} (the list is present even when empty).
func (s *session) printDeleted(format, project string, names []string) error {
	if format == formatText {
		return nil
	}
	type ref struct {
		Project string `json:"project"`
		Name    string `json:"name"`
	}
	out := struct {
		Deleted []ref `json:"deleted"`
	}{Deleted: []ref{}}
	for _, n := range names {
		out.Deleted = append(out.Deleted, ref{Project: project, Name: n})
	}
	b, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	if format == printers.FormatYAML {
		y, err := printers.JSONToYAML(b)
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = s.env.Stdout.Write(y)
		return err
	}
	b, err = json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = s.env.Stdout.Write(append(b, '\n'))
	return err
}

// completeFirstNode completes a node name for the first argument only.
func (s *session) completeFirstNode(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return s.completeNodes(cmd, args, toComplete)
}

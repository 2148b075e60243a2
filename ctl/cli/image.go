package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/bytesize"
)

func newImageCmd(s *session) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images", "img"},
		Short:   "Create, list and remove disk images",
		Example: `  sanbootctl image create scratch --size 10GiB
  sanbootctl image ls
  sanbootctl image rm scratch`,
	}
	cmd.AddCommand(
		newImageCreateCmd(s),
		newImageRmCmd(s),
		newImageCpCmd(s),
		newImageMvCmd(s),
		newImageImportCmd(s),
		newImageExportCmd(s),
		newListImagesCmd(s, "ls [NAME...]", []string{"list"}, "List images (same as get images)",
			`  sanbootctl image ls
  sanbootctl image ls -A -o wide`),
	)
	return cmd
}

func newImageCreateCmd(s *session) *cobra.Command {
	o := &imageCreateOptions{}
	cmd := &cobra.Command{
		Use:   "create NAME --size SIZE",
		Short: "Create a blank image",
		Long: `Create a blank image: a sparse, zero-filled disk of --size bytes on every
agent (or on the agents named by --agents). Only its metadata goes to the
control plane; each agent creates the file in its own store.

SIZE is a number of bytes or a number with a unit: KiB, MiB, GiB, TiB (powers
of 1024) or kB, MB, GB, TB (powers of 1000). Images must be a multiple of
512 bytes.`,
		Example: `  # A 10 GiB blank image on every agent
  sanbootctl image create scratch --size 10GiB

  # Only on two agents, and protected against deletion
  sanbootctl image create golden --size 512MiB --agents storage-1,storage-2 --protected`,
		Args:              exactArgs(1, "image create takes one NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              runOptions(s, o),
	}
	f := cmd.Flags()
	f.StringVar(&o.size, "size", "", "size, e.g. 10GiB, 512MiB or a number of bytes (required)")
	f.StringSliceVar(&o.spec.Agents, "agents", nil, "agents that hold the image, comma-separated (default: every agent)")
	f.BoolVar(&o.spec.Protected, "protected", false, "refuse deletion of the image")
	f.StringVar(&o.spec.Description, "description", "", "free text")
	f.StringVar(&o.spec.EfiBootPath, "efi-boot-path", "", efiBootPathHelp)
	f.StringArrayVar(&o.labelArgs, "label", nil, "label key=value (repeatable)")
	_ = cmd.MarkFlagRequired("size")
	return cmd
}

// imageCreateOptions are image create's (options.go).
type imageCreateOptions struct {
	nameArg
	size      string // --size, parsed into spec by validate
	spec      sanbootv1.ImageSpec
	labelArgs []string // --label
	labels    map[string]string
}

func (o *imageCreateOptions) validate() error {
	n, err := bytesize.Parse(o.size)
	if err != nil {
		return withCode(ExitUsage, fmt.Errorf("--size: %w", err))
	}
	l, err := parseLabels(o.labelArgs)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	o.labels = l
	o.spec.SizeBytes = n
	o.spec.Source = &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Blank{Blank: &sanbootv1.BlankSource{}}}
	return nil
}

// run creates the image.
func (o *imageCreateOptions) run(ctx context.Context, s *session) error {
	c, project, err := s.apiAndProject()
	if err != nil {
		return err
	}
	resp, err := c.PutImage(ctx, &sanbootv1.PutImageRequest{
		Mode: sanbootv1.PutMode_PUT_MODE_CREATE,
		Image: &sanbootv1.Image{
			Metadata: &sanbootv1.ObjectMeta{Project: project, Name: o.name, Labels: o.labels},
			Spec:     &o.spec,
		},
	})
	if err != nil {
		return s.rpcError(err)
	}
	fmt.Fprintf(s.env.Stdout, "image/%s %s\n", o.name, putResult(resp.GetResult()))
	return nil
}

const efiBootPathHelp = `boot loader UEFI nodes run from disks of this image, e.g. \EFI\debian\shimx64.efi (default: \EFI\BOOT\BOOTX64.EFI)`

func newImageRmCmd(s *session) *cobra.Command {
	o := &imageRmOptions{}
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"delete"},
		Short:   "Remove images",
		Long: `Remove images from the control plane and from every agent's store.

A protected image, or one that nodes still use or that is the parent of
snapshots, is refused, and the refusal names them (exit code 5).`,
		Example: `  sanbootctl image rm scratch
  sanbootctl image rm old-1 old-2 --ignore-not-found`,
		Args:              minArgs(1, "name at least one image"),
		ValidArgsFunction: s.completeImages,
		RunE:              runOptions(s, o),
	}
	cmd.Flags().BoolVar(&o.ignoreNotFound, "ignore-not-found", false, "treat images that do not exist as removed")
	return cmd
}

// imageRmOptions are image rm's (options.go).
type imageRmOptions struct {
	nameArgs
	ignoreNotFound bool
}

func (o *imageRmOptions) validate() error { return nil }

func (o *imageRmOptions) run(ctx context.Context, s *session) error {
	return s.removeImages(ctx, o.names, o.ignoreNotFound)
}

// removeImages removes each named image; the errors of the others are
// joined (image rm, delete image).
func (s *session) removeImages(ctx context.Context, names []string, ignoreNotFound bool) error {
	c, project, err := s.apiAndProject()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if _, err := c.DeleteImage(ctx, &sanbootv1.DeleteRequest{Project: project, Name: name}); err != nil {
			err = s.rpcError(err)
			if ignoreNotFound && exitCode(err) == ExitNotFound {
				continue
			}
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(s.env.Stdout, "image/%s deleted\n", name)
	}
	return errors.Join(errs...)
}

func newAgentsCmd(s *session) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "agents",
		Aliases: []string{"agent"},
		Short:   "List agents (storage hosts)",
		Example: `  sanbootctl agents ls
  sanbootctl agents ls -o wide`,
	}
	cmd.AddCommand(newListAgentsCmd(s, "ls [NAME...]", []string{"list"}, "List agents (same as get agents)",
		`  sanbootctl agents ls
  sanbootctl agents ls storage-1 -o yaml`))
	cmd.AddCommand(newEnrollAgentCmd(s))
	return cmd
}

func newEnrollAgentCmd(s *session) *cobra.Command {
	o := &enrollAgentOptions{}
	return &cobra.Command{
		Use:   "enroll NAME",
		Short: "Let the agent with the certificate of NAME use etcd (admins; with TLS)",
		Long: `enroll gives the agent NAME its etcd user and role: with mutual TLS etcd
itself confines each agent to its own assignments, registration and status.
Issue the agent's certificate with sanbootctl pki issue agent NAME first.`,
		Example: `  sanbootctl pki issue agent storage-1 --dir /etc/sanboot/pki
  sanbootctl agents enroll storage-1`,
		Args: exactArgs(1, "agents enroll takes the agent's name"),
		RunE: runOptions(s, o),
	}
}

// enrollAgentOptions are agents enroll's (options.go).
type enrollAgentOptions struct{ nameArg }

func (o *enrollAgentOptions) validate() error { return nil }

func (o *enrollAgentOptions) run(ctx context.Context, s *session) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	if _, err := c.EnrollAgent(ctx, &sanbootv1.EnrollAgentRequest{Name: o.name}); err != nil {
		return s.rpcError(err)
	}
	fmt.Fprintf(s.env.Stdout, "agent/%s enrolled\n", o.name)
	return nil
}

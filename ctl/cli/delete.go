package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

type deleteFlags struct {
	files          []string
	wait           bool
	keepDisk       bool
	force          bool
	ignoreNotFound bool
	timeout        time.Duration
}

func newDeleteCmd(s *session) *cobra.Command {
	o := &deleteFilesOptions{}
	cmd := &cobra.Command{
		Use:   "delete (-f FILE... | node NAME... | image NAME...)",
		Short: "Delete the nodes and images of files, or nodes or images by name",
		Long: `Delete nodes (their iSCSI targets and disks) and images.

delete -f deletes every object of the files: first the nodes; then, once
those nodes are gone (their disks were cloned from the images), the images.
Deleting a node takes two steps: the API marks it deleting ("deleting"),
then its agent removes target and disk and the record goes ("deleted",
printed with --wait).

--keep-disk keeps each node's disk as an image: with the deletion, the API
server writes the snapshot image NODE-disk-YYYYMMDD-HHMMSS of the node's
disk, whose name sanbootctl prints; the agent makes that image before it
deletes the disk. With --wait, sanbootctl also waits until the image is
Ready.`,
		Example: `  # Delete what a file describes and wait until it is gone
  sanbootctl delete -f examples/nodes.yaml --wait

  # Delete two nodes
  sanbootctl delete node node-01 node-02

  # Delete a node but keep its disk as an image
  sanbootctl delete node node-01 --keep-disk`,
		Args: noArgs("name what to delete: delete -f FILE, delete node NAME... or delete image NAME..."),
		RunE: runOptions(s, o),
	}
	o.register(cmd)
	cmd.Flags().StringArrayVarP(&o.files, "filename", "f", nil, "file, directory or - (standard input) whose objects to delete (repeatable)")

	no := &deleteNodeOptions{}
	node := &cobra.Command{
		Use:     "node NAME...",
		Aliases: []string{"nodes", "no"},
		Short:   "Delete nodes by name",
		Example: `  sanbootctl delete node node-01 --wait
  sanbootctl delete node node-02 --keep-disk
  sanbootctl delete node -l rack=r9 --wait`,
		ValidArgsFunction: s.completeNodes,
		RunE:              runOptions(s, no),
	}
	no.register(node)
	node.Flags().StringVarP(&no.selector, "selector", "l", "", "delete the nodes with these labels instead of naming them")

	imo := &deleteImageOptions{}
	image := &cobra.Command{
		Use:               "image NAME...",
		Aliases:           []string{"images", "img"},
		Short:             "Delete images by name (= image rm)",
		Example:           `  sanbootctl delete image scratch`,
		Args:              minArgs(1, "name at least one IMAGE"),
		ValidArgsFunction: s.completeImages,
		RunE:              runOptions(s, imo),
	}
	image.Flags().BoolVar(&imo.ignoreNotFound, "ignore-not-found", false, "treat images that do not exist as deleted")
	image.Flags().DurationVar(&imo.timeout, "timeout", defaultCallTimeout, "bound of the whole command")
	cmd.AddCommand(node, image)
	return cmd
}

// deleteFilesOptions are delete -f's (options.go).
type deleteFilesOptions struct{ deleteFlags }

func (o *deleteFilesOptions) complete([]string) error { return nil }

func (o *deleteFilesOptions) validate() error {
	if len(o.files) == 0 {
		return usageErrorf("name what to delete: delete -f FILE, delete node NAME... or delete image NAME...")
	}
	return nil
}

func (o *deleteFilesOptions) run(ctx context.Context, s *session) error {
	return s.deleteFiles(ctx, o.deleteFlags)
}

// deleteNodeOptions are delete node's (options.go).
type deleteNodeOptions struct {
	nodeArgs
	deleteFlags
}

func (o *deleteNodeOptions) validate() error { return nil }

// run deletes the named nodes, or those -l selects.
func (o *deleteNodeOptions) run(ctx context.Context, s *session) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	project, names, err := o.resolve(ctx, s)
	if err != nil {
		return err
	}
	return s.deleteNodes(ctx, project, names, o.deleteFlags)
}

// deleteImageOptions are delete image's (options.go): image rm's, with a
// deadline.
type deleteImageOptions struct {
	imageRmOptions
	timeout time.Duration // --timeout
}

func (o *deleteImageOptions) run(ctx context.Context, s *session) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	return o.imageRmOptions.run(ctx, s)
}

func (f *deleteFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.wait, "wait", false, "wait until the nodes are gone")
	fl.BoolVar(&f.keepDisk, "keep-disk", false, "keep each node's disk as an image NODE-disk-<time> (the API server makes it with the deletion) and print its name")
	fl.BoolVar(&f.ignoreNotFound, "ignore-not-found", false, "treat objects that do not exist as deleted")
	fl.BoolVar(&f.force, "force", false, forceHelp)
	fl.DurationVar(&f.timeout, "timeout", defaultWaitTimeout, "bound of the whole command, including --wait and --keep-disk (exit code 3 when it passes)")
}

func (s *session) deleteFiles(ctx context.Context, f deleteFlags) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	objs, project, err := s.load(f.files, false)
	if err != nil {
		return err
	}
	nodes := map[string][]string{}
	images := map[string][]string{}
	var projects []string
	for _, o := range objs {
		p := o.Meta().GetProject()
		if _, ok := nodes[p]; !ok {
			if _, ok := images[p]; !ok {
				projects = append(projects, p)
			}
		}
		if o.Node != nil {
			nodes[p] = append(nodes[p], o.Meta().GetName())
		} else {
			images[p] = append(images[p], o.Meta().GetName())
		}
	}
	var errs []error
	for _, p := range projects {
		if len(nodes[p]) == 0 {
			continue
		}
		nf := f
		nf.wait = f.wait || len(images[p]) > 0 // images go only after their nodes
		if err := s.deleteNodes(ctx, p, nodes[p], nf); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c, err := s.api()
	if err != nil {
		return err
	}
	for _, p := range projects {
		for _, name := range images[p] {
			_, err := c.DeleteImage(ctx, &sanbootv1.DeleteRequest{Project: p, Name: name})
			if err != nil {
				err = s.rpcError(err)
				if f.ignoreNotFound && exitCode(err) == ExitNotFound {
					continue
				}
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(s.env.Stdout, "%s deleted\n", objName("image", name, p, project))
		}
	}
	return errors.Join(errs...)
}

// deleteNodes deletes nodes of project; with keepDisk each is snapshotted
// first (see delete --help).
func (s *session) deleteNodes(ctx context.Context, project string, names []string, f deleteFlags) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	var errs []error
	var deleting, kept []string
	type result struct {
		n   *sanbootv1.Node
		err error
	}
	// Many at once, reported in the order named.
	inOrder(ctx, len(names), inFlight, func(ctx context.Context, i int) result {
		n, err := c.DeleteNode(ctx, &sanbootv1.DeleteRequest{Project: project, Name: names[i], KeepDisk: f.keepDisk, Force: f.force})
		return result{n, err}
	}, func(i int, r result) bool {
		name, n, err := names[i], r.n, r.err
		if err != nil {
			err = s.rpcError(err)
			if f.ignoreNotFound && exitCode(err) == ExitNotFound {
				return true
			}
			errs = append(errs, err)
			return true
		}
		deleting = append(deleting, name)
		if f.keepDisk {
			if img := keptDiskImage(n); img != "" {
				fmt.Fprintf(s.env.Stdout, "node/%s disk kept as image/%s\n", name, img)
				kept = append(kept, img)
			} else {
				fmt.Fprintf(s.env.Stdout, "node/%s has no disk to keep (it was never placed on an agent, or it was already being deleted)\n", name)
			}
		}
		if !f.wait {
			fmt.Fprintf(s.env.Stdout, "node/%s deleting\n", name)
		}
		return true
	})
	if f.wait && len(deleting) > 0 {
		errs = append(errs, s.waitNodes(ctx, project, deleting, condDeleted, f.timeout))
		for _, img := range kept {
			if _, err := s.waitImage(ctx, project, img, f.timeout); err != nil {
				errs = append(errs, fmt.Errorf("the disk kept as image/%s: %w", img, err))
			}
		}
	}
	return errors.Join(errs...)
}

// keptDiskPrefix starts the status message of the node DeleteNode returns
// when the API server turned its disk into an image (as the API server's
// apiserver.KeptDiskPrefix); the image's name follows, up to "; ".
const keptDiskPrefix = "disk kept as image/"

// keptDiskImage is the image DeleteNode said it keeps n's disk as, or "".
func keptDiskImage(n *sanbootv1.Node) string {
	rest, ok := strings.CutPrefix(n.GetStatus().GetMessage(), keptDiskPrefix)
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "; ")
	return name
}

// nodeArgs are the nodes a command names (NODE...) or selects with -l
// (delete node, wait node).
type nodeArgs struct {
	nameArgs
	selector string // -l
}

// resolve returns the project and the named nodes, or those the selector
// picks now.
func (o *nodeArgs) resolve(ctx context.Context, s *session) (string, []string, error) {
	project, err := s.project()
	if err != nil {
		return "", nil, err
	}
	names, err := s.namesOrSelector(ctx, project, o.names, o.selector)
	return project, names, err
}

// namesOrSelector returns names, or, when selector is set instead, the
// names of the nodes of project that match it.
func (s *session) namesOrSelector(ctx context.Context, project string, names []string, selector string) ([]string, error) {
	switch {
	case len(names) > 0 && selector != "":
		return nil, usageErrorf("name nodes or select them with -l, not both")
	case len(names) > 0:
		return names, nil
	case selector == "":
		return nil, usageErrorf("name at least one NODE, or select nodes with -l SELECTOR")
	}
	if _, err := api.ParseSelector(selector); err != nil {
		return nil, withCode(ExitUsage, err)
	}
	c, err := s.api()
	if err != nil {
		return nil, err
	}
	resp, err := listNodes(ctx, c, &sanbootv1.ListRequest{Project: project, LabelSelector: selector})
	if err != nil {
		return nil, s.rpcError(err)
	}
	for _, n := range resp.GetNodes() {
		names = append(names, n.GetMetadata().GetName())
	}
	if len(names) == 0 {
		return nil, withCode(ExitNotFound, fmt.Errorf("no nodes in project %q match -l %s; see which labels they have with sanbootctl get nodes -o yaml", project, selector))
	}
	slices.Sort(names)
	return names, nil
}

// forceHelp is the help of --force on delete node and deprovision.
const forceHelp = "when a node's agent is unavailable (its host is gone for good), remove the node without the agent's teardown; " +
	"its disk and target stay on that host. With a live agent the normal teardown still runs"

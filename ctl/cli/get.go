package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/printers"
)

// listFlags are the flags of every get/ls command.
type listFlags struct {
	output      string
	allProjects bool
	selector    string
	watch       bool // get KIND -w
}

func (f *listFlags) register(cmd *cobra.Command, projects, labels bool) {
	cmd.Flags().StringVarP(&f.output, "output", "o", printers.FormatTable, "output format: table, wide, json, yaml, name or jsonpath=TEMPLATE (e.g. jsonpath='{.status.phase}')")
	if projects {
		cmd.Flags().BoolVarP(&f.allProjects, "all-projects", "A", false, "list objects of every project")
	}
	if labels {
		cmd.Flags().StringVarP(&f.selector, "selector", "l", "", "label selector, e.g. rack=r1,env!=test")
	}
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{printers.FormatTable, printers.FormatWide, printers.FormatJSON, printers.FormatYAML, printers.FormatName, printers.FormatJSONPathPrefix}, cobra.ShellCompDirectiveNoFileComp))
}

// check validates the flags; names are the NAME arguments.
func (f *listFlags) check(names []string) error {
	if err := printers.CheckFormat(f.output); err != nil {
		return err
	}
	if len(names) > 0 && (f.allProjects || f.selector != "") {
		return usageErrorf("names cannot be combined with --all-projects or --selector")
	}
	if _, err := api.ParseSelector(f.selector); err != nil {
		return withCode(ExitUsage, err)
	}
	return nil
}

func newGetCmd(s *session) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get (nodes|images|agents|members|snapshots) [NAME...]",
		Short: "Show nodes, images, agents, members or snapshots",
		Long: `Show nodes, images or agents as a table (default), a wide table, JSON or YAML.

Tables show ages; JSON and YAML use the API's JSON names and RFC 3339 times.
A list prints as {"nodes": [...]} (or images, agents); a single NAME prints
the object itself, which apply -f takes back. A status prints every field,
zero values too (lun: 0, portals: []).`,
		Example: `  # Nodes of the current project, then of every project
  sanbootctl get nodes
  sanbootctl get nodes -A

  # One node with its target, portals and status message
  sanbootctl get node node-01 -o wide

  # Nodes labelled rack=r1, as YAML
  sanbootctl get nodes -l rack=r1 -o yaml

  # Images and agents
  sanbootctl get images
  sanbootctl get agents -o json`,
		RunE: noSubcommand("get", "nodes, images, agents or snapshots"),
	}
	cmd.AddCommand(
		newGetNodesCmd(s),
		newListImagesCmd(s, "images [NAME...]", []string{"image", "img"}, "Show images",
			`  sanbootctl get images
  sanbootctl get image debian-13 -o yaml
  sanbootctl get images -w`),
		newListAgentsCmd(s, "agents [NAME...]", []string{"agent"}, "Show agents (storage hosts)",
			`  sanbootctl get agents
  sanbootctl get agents -o wide
  sanbootctl get agents -w`),
		newListMembersCmd(s, "members", []string{"member"}, "Show control-plane members: health, roles, raft index, lag, quorum",
			`  sanbootctl get members
  sanbootctl get members -o wide`),
		newListSnapshotsCmd(s, "snapshots [NAME...]", []string{"snapshot", "snap"}, "Show images made from snapshots",
			`  sanbootctl get snapshots
  sanbootctl get snapshots -A -w`),
	)
	return cmd
}

// cmdText is the help of one command.
type cmdText struct {
	use     string
	aliases []string
	short   string
	long    string
	example string
}

func newGetNodesCmd(s *session) *cobra.Command {
	return newGetKindCmd(s, nodeKind(), cmdText{use: "nodes [NAME...]", aliases: []string{"node", "no"}, short: "Show nodes",
		example: `  sanbootctl get nodes
  sanbootctl get nodes -A -o wide
  sanbootctl get node node-01 -o json
  sanbootctl get nodes -w
  sanbootctl get node node-01 -o jsonpath='{.status.phase}'
  sanbootctl get nodes -o name`}, s.completeNodes)
}

// newListImagesCmd builds "get images" and "image ls".
func newListImagesCmd(s *session, use string, aliases []string, short, example string) *cobra.Command {
	return newGetKindCmd(s, imageKind(), cmdText{use: use, aliases: aliases, short: short, example: example}, s.completeImages)
}

// newListAgentsCmd builds "get agents" and "agents ls".
func newListAgentsCmd(s *session, use string, aliases []string, short, example string) *cobra.Command {
	return newGetKindCmd(s, agentKind(), cmdText{use: use, aliases: aliases, short: short, example: example}, nil)
}

// newGetKindCmd builds "get KIND" (and the ls of its own command) from
// the kind's description.
func newGetKindCmd[T proto.Message](s *session, k kind[T], text cmdText, complete cobra.CompletionFunc) *cobra.Command {
	o := &getOptions[T]{kind: k}
	cmd := &cobra.Command{
		Use:               text.use,
		Aliases:           text.aliases,
		Short:             text.short,
		Long:              text.long,
		Example:           text.example,
		ValidArgsFunction: complete,
		RunE:              runOptions(s, o),
	}
	o.register(cmd, k.projects, k.projects)
	cmd.Flags().BoolVarP(&o.watch, "watch", "w", false, "after listing, print "+k.plural+" again as they change (until interrupted)")
	return cmd
}

// getOptions are the options of "get KIND" (options.go): the NAME
// arguments and the list flags.
type getOptions[T proto.Message] struct {
	nameArgs
	listFlags
	kind kind[T]
}

func (o *getOptions[T]) validate() error { return o.check(o.names) }

func (o *getOptions[T]) run(ctx context.Context, s *session) error {
	if o.watch {
		return watchObjects(ctx, s, o.listFlags, o.kind, o.names)
	}
	return getObjects(ctx, s, o.listFlags, o.kind, o.names)
}

// noneFound says on stderr that a table would be empty (as kubectl does,
// without a header) and reports whether it did; JSON and YAML print an
// empty list instead.
func (s *session) noneFound(f listFlags, kind, project string) bool {
	if f.output != printers.FormatTable && f.output != printers.FormatWide {
		return false
	}
	if f.allProjects || project == "" {
		fmt.Fprintf(s.env.Stderr, "No %s found.\n", kind)
	} else {
		fmt.Fprintf(s.env.Stderr, "No %s found in project %q.\n", kind, project)
	}
	return true
}

// getObjects prints the named objects of k, or the list that f selects.
func getObjects[T proto.Message](ctx context.Context, s *session, f listFlags, k kind[T], names []string) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	project := ""
	if k.projects {
		if project, err = s.project(); err != nil {
			return err
		}
	}
	if len(names) > 0 {
		return getNamed(names, func(name string) (T, error) {
			v, err := k.get(ctx, c, project, name)
			if err == nil && k.keep != nil && !k.keep(v) {
				return v, k.notKept(v)
			}
			if err != nil {
				err = s.rpcError(err)
			}
			return v, err
		}, func(items []T) error { return k.print(s.printer(f, len(names) == 1), items) })
	}
	all, err := k.list(ctx, c, &sanbootv1.ListRequest{Project: project, AllProjects: f.allProjects, LabelSelector: f.selector})
	if err != nil {
		return s.rpcError(err)
	}
	items := all
	if k.keep != nil {
		items = nil
		for _, v := range all {
			if k.keep(v) {
				items = append(items, v)
			}
		}
	}
	if len(items) == 0 && s.noneFound(f, k.plural, project) {
		return nil
	}
	return k.print(s.printer(f, false), items)
}

// getNamed gets each of names, prints those found (all at once, so that a
// table has one header), and returns the errors of the others (for the
// user: get maps its own), joined.
func getNamed[T any](names []string, get func(string) (T, error), print func([]T) error) error {
	var found []T
	var errs []error
	for _, name := range names {
		v, err := get(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		found = append(found, v)
	}
	if len(found) > 0 {
		if err := print(found); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

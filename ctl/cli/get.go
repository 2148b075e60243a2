package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// listFlags are the flags of every get/ls command.
type listFlags struct {
	output      string
	allProjects bool
	selector    string
	watch       bool // get KIND -w
}

func (f *listFlags) register(cmd *cobra.Command, projects, labels bool) {
	cmd.Flags().StringVarP(&f.output, "output", "o", formatTable, "output format: table, wide, json, yaml, name or jsonpath=TEMPLATE (e.g. jsonpath='{.status.phase}')")
	if projects {
		cmd.Flags().BoolVarP(&f.allProjects, "all-projects", "A", false, "list objects of every project")
	}
	if labels {
		cmd.Flags().StringVarP(&f.selector, "selector", "l", "", "label selector, e.g. rack=r1,env!=test")
	}
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{formatTable, formatWide, formatJSON, formatYAML, formatName, formatJSONPathPrefix}, cobra.ShellCompDirectiveNoFileComp))
}

// check validates the flags; names are the NAME arguments.
func (f *listFlags) check(names []string) error {
	if err := checkFormat(f.output); err != nil {
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
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("name what to get: nodes, images, agents or snapshots")
			}
			return usageErrorf("cannot get %q: use nodes, images, agents or snapshots", args[0])
		},
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

func newGetNodesCmd(s *session) *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:     "nodes [NAME...]",
		Aliases: []string{"node", "no"},
		Short:   "Show nodes",
		Example: `  sanbootctl get nodes
  sanbootctl get nodes -A -o wide
  sanbootctl get node node-01 -o json
  sanbootctl get nodes -w
  sanbootctl get node node-01 -o jsonpath='{.status.phase}'
  sanbootctl get nodes -o name`,
		ValidArgsFunction: s.completeNodes,
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := f.check(names); err != nil {
				return err
			}
			if f.watch {
				return s.watchNodes(cmd.Context(), names, f)
			}
			return s.getNodes(cmd.Context(), names, f)
		},
	}
	f.register(cmd, true, true)
	cmd.Flags().BoolVarP(&f.watch, "watch", "w", false, "after listing, print nodes again as they change (until interrupted)")
	return cmd
}

// newListImagesCmd builds "get images" and "image ls".
func newListImagesCmd(s *session, use string, aliases []string, short, example string) *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:               use,
		Aliases:           aliases,
		Short:             short,
		Example:           example,
		ValidArgsFunction: s.completeImages,
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := f.check(names); err != nil {
				return err
			}
			if f.watch {
				return s.watchImages(cmd.Context(), names, f, false)
			}
			return s.getImages(cmd.Context(), names, f)
		},
	}
	f.register(cmd, true, true)
	cmd.Flags().BoolVarP(&f.watch, "watch", "w", false, "after listing, print images again as they change (until interrupted)")
	return cmd
}

// newListAgentsCmd builds "get agents" and "agents ls".
func newListAgentsCmd(s *session, use string, aliases []string, short, example string) *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:     use,
		Aliases: aliases,
		Short:   short,
		Example: example,
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := f.check(names); err != nil {
				return err
			}
			if f.watch {
				return s.watchAgents(cmd.Context(), names, f)
			}
			return s.getAgents(cmd.Context(), names, f)
		},
	}
	f.register(cmd, false, false)
	cmd.Flags().BoolVarP(&f.watch, "watch", "w", false, "after listing, print agents again as they change (until interrupted)")
	return cmd
}

func (s *session) printer(f listFlags, single bool) printer {
	return printer{w: s.env.Stdout, format: f.output, allProjects: f.allProjects, now: s.env.Now(), single: single}
}

// noneFound says on stderr that a table would be empty (as kubectl does,
// without a header) and reports whether it did; JSON and YAML print an
// empty list instead.
func (s *session) noneFound(f listFlags, kind, project string) bool {
	if f.output != formatTable && f.output != formatWide {
		return false
	}
	if f.allProjects || project == "" {
		fmt.Fprintf(s.env.Stderr, "No %s found.\n", kind)
	} else {
		fmt.Fprintf(s.env.Stderr, "No %s found in project %q.\n", kind, project)
	}
	return true
}

func (s *session) getNodes(ctx context.Context, names []string, f listFlags) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	project, err := s.project()
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return getNamed(s, names, func(name string) (*sanbootv1.Node, error) {
			return c.GetNode(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
		}, s.printer(f, len(names) == 1).nodes)
	}
	resp, err := listNodes(ctx, c, &sanbootv1.ListRequest{Project: project, AllProjects: f.allProjects, LabelSelector: f.selector})
	if err != nil {
		return s.rpcError(err)
	}
	if len(resp.GetNodes()) == 0 && s.noneFound(f, "nodes", project) {
		return nil
	}
	return s.printer(f, false).nodes(resp.GetNodes())
}

func (s *session) getImages(ctx context.Context, names []string, f listFlags) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	project, err := s.project()
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return getNamed(s, names, func(name string) (*sanbootv1.Image, error) {
			return c.GetImage(ctx, &sanbootv1.GetRequest{Project: project, Name: name})
		}, s.printer(f, len(names) == 1).images)
	}
	resp, err := listImages(ctx, c, &sanbootv1.ListRequest{Project: project, AllProjects: f.allProjects, LabelSelector: f.selector})
	if err != nil {
		return s.rpcError(err)
	}
	if len(resp.GetImages()) == 0 && s.noneFound(f, "images", project) {
		return nil
	}
	return s.printer(f, false).images(resp.GetImages())
}

func (s *session) getAgents(ctx context.Context, names []string, f listFlags) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	if len(names) > 0 {
		return getNamed(s, names, func(name string) (*sanbootv1.Agent, error) {
			return c.GetAgent(ctx, &sanbootv1.GetAgentRequest{Name: name})
		}, s.printer(f, len(names) == 1).agents)
	}
	resp, err := c.ListAgents(ctx, &sanbootv1.ListAgentsRequest{})
	if err != nil {
		return s.rpcError(err)
	}
	if len(resp.GetAgents()) == 0 && s.noneFound(f, "agents", "") {
		return nil
	}
	return s.printer(f, false).agents(resp.GetAgents())
}

// getNamed gets each of names, prints those found (all at once, so that a
// table has one header), and returns the errors of the others, joined.
func getNamed[T any](s *session, names []string, get func(string) (T, error), print func([]T) error) error {
	var found []T
	var errs []error
	for _, name := range names {
		v, err := get(name)
		if err != nil {
			errs = append(errs, s.rpcError(err))
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

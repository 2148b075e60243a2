package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

func newProvisionCmd(s *session) *cobra.Command {
	o := &provisionOptions{}
	cmd := &cobra.Command{
		Use:   "provision NODE --image IMAGE",
		Short: "Declare that a node boots from a clone of an image",
		Long: `Declare that NODE boots from a copy-on-write clone of IMAGE.

The control plane places the node on an agent that holds the image; the agent
clones the image into the node's disk and serves it as an iSCSI target that
only the node's initiator may log into. provision creates the node: if it
exists with the same spec nothing changes ("unchanged"); if it exists with a
different spec the exit code is 5.

With --wait, provision follows the node until it is Ready for this spec,
printing phase changes on stderr. A Failed node ends the wait with exit code 1
and the agent's message; --timeout ends it with exit code 3.`,
		Example: `  # Boot node-01 from debian-13; it may boot by MAC through the boot server
  sanbootctl provision node-01 --image debian-13 --mac 52:54:00:12:34:56

  # Pin to an agent, turn on CHAP, label it and wait until it is served
  sanbootctl provision node-02 --image debian-13 --agent storage-1 --chap \
      --label rack=r1 --wait --timeout 10m

  # Use the initiator name the machine already has
  sanbootctl provision node-03 --image debian-13 --initiator iqn.2004-10.com.example:node-03`,
		Args:              exactArgs(1, "provision takes one NODE name"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              runOptions(s, o),
	}
	f := cmd.Flags()
	f.StringVar(&o.spec.Image, "image", "", "image to clone the node's disk from (required)")
	f.StringVar(&o.spec.InitiatorIqn, "initiator", "", "initiator IQN allowed to log in (default iqn.2026-11.io.sanboot:initiator.PROJECT.NODE)")
	f.StringArrayVar(&o.spec.Macs, "mac", nil, "MAC address the boot server knows the node by (repeatable)")
	f.StringVar(&o.spec.Agent, "agent", "", "place the node on this agent only")
	f.BoolVar(&o.spec.Chap, "chap", false, "require CHAP authentication on the target")
	f.BoolVar(&o.spec.MutualChap, "mutual-chap", false, "with --chap, the node also authenticates the target (mutual CHAP)")
	f.StringArrayVar(&o.labelArgs, "label", nil, "label key=value (repeatable)")
	f.BoolVar(&o.wait, "wait", false, "wait until the node is Ready")
	f.DurationVar(&o.timeout, "timeout", defaultWaitTimeout, "how long to wait with --wait (exit code 3 when it passes); without --wait, the deadline of the call")
	_ = cmd.MarkFlagRequired("image")
	_ = cmd.RegisterFlagCompletionFunc("image", s.completeImages)
	return cmd
}

// provisionOptions are provision's (options.go).
type provisionOptions struct {
	nameArg
	spec      sanbootv1.NodeSpec
	labelArgs []string // --label
	labels    map[string]string
	wait      bool
	timeout   time.Duration
}

func (o *provisionOptions) validate() error {
	l, err := parseLabels(o.labelArgs)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	o.labels = l
	return nil
}

// run creates the node and, with --wait, waits until it is Ready.
func (o *provisionOptions) run(ctx context.Context, s *session) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, project, err := s.apiAndProject()
	if err != nil {
		return err
	}
	resp, err := c.PutNode(ctx, &sanbootv1.PutNodeRequest{
		Mode: sanbootv1.PutMode_PUT_MODE_CREATE,
		Node: &sanbootv1.Node{
			Metadata: &sanbootv1.ObjectMeta{Project: project, Name: o.name, Labels: o.labels},
			Spec:     &o.spec,
		},
	})
	if err != nil {
		return s.rpcError(err)
	}
	fmt.Fprintf(s.env.Stdout, "node/%s %s\n", o.name, putResult(resp.GetResult()))
	if !o.wait {
		return nil
	}
	return s.waitNodes(ctx, project, []string{o.name}, condReady, o.timeout)
}

func putResult(r sanbootv1.PutResult) string {
	switch r {
	case sanbootv1.PutResult_PUT_RESULT_CREATED:
		return "created"
	case sanbootv1.PutResult_PUT_RESULT_CONFIGURED:
		return "configured"
	case sanbootv1.PutResult_PUT_RESULT_UNCHANGED:
		return "unchanged"
	}
	return "accepted"
}

func newDeprovisionCmd(s *session) *cobra.Command {
	o := &deprovisionOptions{}
	cmd := &cobra.Command{
		Use:   "deprovision NODE...",
		Short: "Delete nodes: tear down their targets and disks",
		Long: `Delete nodes. Deletion takes two steps: the API marks the node deleting,
then its agent removes the iSCSI target and the disk and the record goes.
deprovision returns after the first step ("deleting"); with --wait it returns
once the node is gone ("deleted").`,
		Example: `  # Delete a node and wait until its target and disk are gone
  sanbootctl deprovision node-01 --wait

  # Delete several nodes, keeping their disks as images
  sanbootctl deprovision node-02 node-03 --keep-disk`,
		Args:              minArgs(1, "name at least one NODE"),
		ValidArgsFunction: s.completeNodes,
		RunE:              runOptions(s, o),
	}
	f := cmd.Flags()
	f.BoolVar(&o.wait, "wait", false, "wait until the nodes are gone")
	f.BoolVar(&o.keepDisk, "keep-disk", false, "keep each node's disk as an image NODE-disk-<time> (the API server makes it with the deletion) and print its name")
	f.BoolVar(&o.ignoreNotFound, "ignore-not-found", false, "treat nodes that do not exist as deleted")
	f.BoolVar(&o.force, "force", false, forceHelp)
	f.DurationVar(&o.timeout, "timeout", defaultWaitTimeout, "how long to wait with --wait (exit code 3 when it passes); without --wait, the deadline of the calls")
	return cmd
}

// deprovisionOptions are deprovision's (options.go): the flags of delete
// node.
type deprovisionOptions struct {
	nameArgs
	deleteFlags
}

func (o *deprovisionOptions) validate() error { return nil }

// run is "delete node" (delete.go) under the old system's name.
func (o *deprovisionOptions) run(ctx context.Context, s *session) error {
	names, f := o.names, o.deleteFlags
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	project, err := s.project()
	if err != nil {
		return err
	}
	return s.deleteNodes(ctx, project, names, f)
}

// exactArgs and minArgs are cobra argument checks with a message that says
// what the command wants.
func exactArgs(n int, msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s (got %d arguments)", msg, len(args))
		}
		return nil
	}
}

func minArgs(n int, msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return errors.New(msg)
		}
		return nil
	}
}

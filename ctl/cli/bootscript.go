package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/printers"
)

func newBootScriptCmd(s *session) *cobra.Command {
	o := &bootScriptOptions{}
	cmd := &cobra.Command{
		Use:   "boot-script NODE",
		Short: "Print the iPXE script the boot server serves NODE, or its boot URL",
		Long: `Print the iPXE script the control plane's boot server serves NODE now: while
the node is not Ready, a script that says why and tries again; once it is,
one that sets the node's initiator name and, with CHAP, its credentials, and
sanboots from every portal of its disk's target.

The script holds the node's CHAP secrets: it is the only output of
sanbootctl that does. Give it to no one but the node.

--url prints only the URL the node fetches its script from. When the control
plane runs with --boot-tokens, every call issues a new one-time token in that
URL (the node's earlier URLs stop working): hand it to the node, e.g. in its
DHCP host entry or as its firmware's HTTP boot URL, then power the node on.
See docs/boot.md.`,
		Example: `  # What node-01 gets when it boots
  sanbootctl boot-script node-01

  # Save it as a file for iPXE (an embedded script, or a USB stick)
  sanbootctl boot-script node-01 > node-01.ipxe

  # The URL to hand to node-01's firmware or DHCP entry
  sanbootctl boot-script node-01 --url`,
		Args:              exactArgs(1, "boot-script takes one NODE"),
		ValidArgsFunction: s.completeFirstNode,
		RunE:              runOptions(s, o),
	}
	cmd.Flags().BoolVar(&o.urlOnly, "url", false, "print only the URL the node fetches its script from (with a new one-time token when the control plane uses them)")
	addActionOutput(cmd, &o.output)
	return cmd
}

// bootScriptOptions are boot-script's (options.go).
type bootScriptOptions struct {
	nameArg        // the node
	output  string // -o
	urlOnly bool   // --url
}

func (o *bootScriptOptions) validate() error {
	if err := checkActionFormat(o.output); err != nil {
		return err
	}
	if o.urlOnly && o.output != formatText {
		return usageErrorf("--url prints the URL alone; it does not go with -o %s", o.output)
	}
	return nil
}

// run prints the script, its URL, or the script as yaml or json.
func (o *bootScriptOptions) run(ctx context.Context, s *session) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	project, err := s.project()
	if err != nil {
		return err
	}
	bs, err := c.GetBootScript(ctx, &sanbootv1.GetRequest{Project: project, Name: o.name})
	if err != nil {
		return s.rpcError(err)
	}
	switch {
	case o.urlOnly:
		fmt.Fprintln(s.env.Stdout, bs.GetUrl())
	case o.output == formatText:
		fmt.Fprint(s.env.Stdout, bs.GetScript())
	default:
		return printers.Printer{W: s.env.Stdout, Format: o.output, Now: s.env.Now(), Single: true}.StructuredOut("bootScripts", printers.ProtoList([]*sanbootv1.BootScript{bs}))
	}
	return nil
}

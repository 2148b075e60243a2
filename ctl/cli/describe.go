package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/printers"
)

func newDescribeCmd(s *session) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe node NAME...",
		Short: "Show a node in detail: spec, status, conditions, target and recent events",
		Example: `  sanbootctl describe node node-01
  sanbootctl describe node node-01 -p lab`,
		RunE: noSubcommand("describe", "describe node NAME..."),
	}
	node := &cobra.Command{
		Use:     "node NAME...",
		Aliases: []string{"nodes", "no"},
		Short:   "Show nodes in detail",
		Long: `Show a node's metadata, spec, status and conditions, where its disk is
served (agent, target IQN, portals, LUN), its last boot-script fetch and
its recent events.

The last boot-script fetch is what the boot server recorded of the last
request that named the node (by MAC or by name): when, from which address,
the firmware it said it runs, whether the URL carried a boot token (never
the token), and whether it was told to boot or to wait (and why). "never"
means no such request came since the node was created.

Sessions are the initiators logged in to the node's target (name and
address), as its agent last saw them: it looks at every resync (each
minute by default) and whenever it builds the target. Together with the
last fetch they tell "never asked for a script", "asked but did not log
in" and "logged in" apart.

Events are kept by the API server in memory, the most recent 20 per node,
from what it saw since it started; another control-plane member may
remember a different stretch.`,
		Example: `  sanbootctl describe node node-01
  sanbootctl describe node node-01 node-02`,
		Args:              minArgs(1, "name at least one NODE"),
		ValidArgsFunction: s.completeNodes,
		RunE:              runOptions(s, &describeNodeOptions{}),
	}
	cmd.AddCommand(node)
	return cmd
}

// describeNodeOptions are describe node's (options.go).
type describeNodeOptions struct{ nameArgs }

func (o *describeNodeOptions) validate() error { return nil }

// run describes each named node; the errors of the others are joined.
func (o *describeNodeOptions) run(ctx context.Context, s *session) error {
	names := o.names
	c, project, err := s.apiAndProject()
	if err != nil {
		return err
	}
	var errs []error
	for i, name := range names {
		req := &sanbootv1.GetRequest{Project: project, Name: name}
		n, err := c.GetNode(ctx, req)
		if err != nil {
			errs = append(errs, s.rpcError(err))
			continue
		}
		var agent *sanbootv1.Agent
		if a := n.GetStatus().GetAgent(); a != "" {
			agent, _ = c.GetAgent(ctx, &sanbootv1.GetAgentRequest{Name: a}) // best effort
		}
		var events []*sanbootv1.Event
		evNote := ""
		resp, err := c.ListNodeEvents(ctx, req)
		switch status.Code(err) {
		case codes.OK:
			events = resp.GetEvents()
		case codes.Unimplemented:
			evNote = "the API server keeps no events (older version)"
		default:
			evNote = "could not list events: " + s.rpcError(err).Error()
		}
		if i > 0 {
			fmt.Fprintln(s.env.Stdout)
		}
		writeNodeDescription(s.env.Stdout, s.env.Now(), n, agent, events, evNote)
	}
	return errors.Join(errs...)
}

// describeSessions says who is logged in to a node's target, as its
// agent last reported, one session a line.
func describeSessions(st *sanbootv1.NodeStatus) []string {
	if st.GetTargetIqn() == "" {
		return []string{"<none> (no target)"}
	}
	if len(st.GetSessions()) == 0 {
		return []string{"none (no initiator is logged in to the target)"}
	}
	var who []string
	for _, s := range st.GetSessions() {
		w := s.GetInitiator()
		if s.GetAddress() != "" {
			w += " from " + s.GetAddress()
		}
		who = append(who, w)
	}
	return who
}

func stamp(now time.Time, t *timestamppb.Timestamp) string {
	if t == nil || !t.IsValid() || (t.Seconds == 0 && t.Nanos == 0) {
		return "<unknown>"
	}
	return t.AsTime().UTC().Format(time.RFC3339) + " (" + printers.Age(now, t) + " ago)"
}

func writeNodeDescription(out io.Writer, now time.Time, n *sanbootv1.Node, agent *sanbootv1.Agent, events []*sanbootv1.Event, evNote string) {
	m, spec, st := n.GetMetadata(), n.GetSpec(), n.GetStatus()
	w := tabwriter.NewWriter(out, 0, 8, 1, ' ', 0)
	line := func(indent int, k, v string) { fmt.Fprintf(w, "%s%s:\t%s\n", strings.Repeat("  ", indent), k, v) }
	line(0, "Name", m.GetName())
	line(0, "Project", api.ProjectOrDefault(m.GetProject()))
	var labels []string
	for _, k := range slices.Sorted(maps.Keys(m.GetLabels())) {
		labels = append(labels, k+"="+m.GetLabels()[k])
	}
	line(0, "Labels", printers.OrNone(strings.Join(labels, ",")))
	line(0, "Created", stamp(now, m.GetCreateTime()))
	if m.GetDeleteTime() != nil {
		line(0, "Deletion requested", stamp(now, m.GetDeleteTime()))
	}
	line(0, "Generation", strconv.FormatInt(m.GetGeneration(), 10))
	line(0, "UID", printers.OrNone(m.GetUid()))
	fmt.Fprintln(w, "Spec:")
	line(1, "Image", spec.GetImage())
	line(1, "MACs", printers.OrNone(strings.Join(spec.GetMacs(), ", ")))
	initiator := spec.GetInitiatorIqn()
	if initiator == "" {
		initiator = api.DefaultInitiatorIQN(api.ProjectOrDefault(m.GetProject()), m.GetName()) + " (default)"
	}
	line(1, "Initiator IQN", initiator)
	line(1, "Agent pin", printers.OrNone(spec.GetAgent()))
	chap := strconv.FormatBool(spec.GetChap())
	if spec.GetMutualChap() {
		chap += " (mutual)"
	}
	line(1, "CHAP", chap)
	line(1, "Keep disk", strconv.FormatBool(spec.GetKeepDisk()))
	fmt.Fprintln(w, "Status:")
	line(1, "Phase", printers.OrNone(st.GetPhase()))
	line(1, "Message", printers.OrNone(st.GetMessage()))
	obs := strconv.FormatInt(st.GetObservedGeneration(), 10)
	if st.GetObservedGeneration() < m.GetGeneration() {
		obs += " (the agent has not acted on generation " + strconv.FormatInt(m.GetGeneration(), 10) + " yet)"
	}
	line(1, "Observed generation", obs)
	line(1, "Updated", stamp(now, st.GetUpdateTime()))
	fmt.Fprintln(w, "Target:")
	agentLine := printers.OrNone(st.GetAgent())
	if agent != nil {
		agentLine += fmt.Sprintf(" (%s, driver %s, version %s)", printers.OrNone(agent.GetState()), printers.OrNone(agent.GetRecord().GetDriver()), printers.OrNone(agent.GetRecord().GetVersion()))
	}
	line(1, "Agent", agentLine)
	if fo := st.GetFailoverAgents(); len(fo) > 0 {
		line(1, "Failover to", strings.Join(fo, ", ")+" (the other Ready agents of its storage domain)")
	}
	line(1, "Target IQN", printers.OrNone(st.GetTargetIqn()))
	line(1, "Portals", printers.OrNone(strings.Join(st.GetPortals(), ", ")))
	lun := "<none>"
	if st.GetTargetIqn() != "" {
		lun = strconv.Itoa(int(st.GetLun()))
	}
	line(1, "LUN", lun)
	line(1, "Clone mode", printers.OrNone(st.GetCloneMode()))
	fmt.Fprintln(w, "Boot:")
	if f := n.GetLastBootFetch(); f == nil {
		line(1, "Last script fetch", "never (no request for a boot script has named this node)")
	} else {
		line(1, "Last script fetch", stamp(now, f.GetTime())+" from "+printers.OrNone(f.GetRemoteAddr()))
		firmware := f.GetPlatform()
		if firmware == "" {
			firmware = "<not said>"
		}
		line(1, "Firmware", firmware)
		token := "not used"
		if f.GetToken() {
			token = "used"
		}
		line(1, "Boot token", token)
		served := printers.OrNone(f.GetOutcome())
		switch f.GetOutcome() {
		case "boot":
			served = "a script that boots from the target"
		case "wait":
			served = "a script that waits: " + printers.OrNone(f.GetMessage())
		}
		line(1, "Served", served)
	}
	for i, v := range describeSessions(st) {
		if i == 0 {
			line(1, "Sessions", v)
		} else {
			fmt.Fprintf(w, "  \t%s\n", v) // one session a line, aligned
		}
	}
	w.Flush()

	fmt.Fprintln(out, "Conditions:")
	if len(st.GetConditions()) == 0 {
		fmt.Fprintln(out, "  <none>")
	} else {
		tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
		for _, c := range st.GetConditions() {
			since := "<unknown>"
			if t := c.GetLastTransitionTime(); t != nil {
				since = printers.Age(now, t)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.GetType(), condStatus(c.GetStatus()), printers.OrNone(c.GetReason()), since, printers.OrNone(c.GetMessage()))
		}
		tw.Flush()
	}
	fmt.Fprintln(out, "Events:")
	switch {
	case evNote != "":
		fmt.Fprintf(out, "  <%s>\n", evNote)
	case len(events) == 0:
		fmt.Fprintln(out, "  <none>")
	default:
		tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "  TYPE\tREASON\tAGE\tCOUNT\tMESSAGE")
		for _, e := range events {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", e.GetType(), printers.OrNone(e.GetReason()), printers.Age(now, e.GetTime()), e.GetCount(), printers.OrNone(e.GetMessage()))
		}
		tw.Flush()
	}
}

func condStatus(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

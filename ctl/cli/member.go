package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/printers"
)

// sanbootctl member: the control plane's etcd members, as etcd's runtime
// reconfiguration guide changes them (learner first, promote once caught
// up, refuse a removal that breaks quorum).

func newMemberCmd(s *session) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "member",
		Aliases: []string{"members"},
		Short:   "List, add, promote and remove control-plane members",
		Long: `A control plane of 3 or 5 members survives the loss of 1 or 2. To replace a
member's host: add the new member (a learner), start it with the flags add
prints, promote it once it caught up, then remove the old one
(docs/operations.md).`,
		Example: `  sanbootctl member list
  sanbootctl member add cp4 --peer-urls https://10.0.0.4:2380
  sanbootctl member promote cp4
  sanbootctl member remove cp1`,
	}
	cmd.AddCommand(newListMembersCmd(s, "list", []string{"ls"}, "List members: health, roles, raft index, lag; says when quorum is at risk",
		`  sanbootctl member list
  sanbootctl member list -o wide`))
	cmd.AddCommand(newMemberAddCmd(s), newMemberPromoteCmd(s), newMemberRemoveCmd(s))
	return cmd
}

// newListMembersCmd builds "member list" and "get members".
func newListMembersCmd(s *session, use string, aliases []string, short, example string) *cobra.Command {
	o := &listMembersOptions{}
	cmd := &cobra.Command{
		Use:     use,
		Aliases: aliases,
		Short:   short,
		Example: example,
		Args:    cobra.NoArgs,
		RunE:    runOptions(s, o),
	}
	o.register(cmd, false, false)
	return cmd
}

// listMembersOptions are member list's and get members' (options.go).
type listMembersOptions struct{ listFlags }

func (o *listMembersOptions) complete([]string) error { return nil }

func (o *listMembersOptions) validate() error { return o.check(nil) }

func (o *listMembersOptions) run(ctx context.Context, s *session) error {
	return s.listMembers(ctx, o.listFlags)
}

func (s *session) listMembers(ctx context.Context, f listFlags) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	resp, err := c.ListClusterMembers(ctx, &sanbootv1.ListClusterMembersRequest{})
	if err != nil {
		return s.rpcError(err)
	}
	p := s.printer(f, false)
	if err := p.members(resp.GetMembers()); err != nil {
		return err
	}
	if !p.Structured() {
		fmt.Fprintln(s.env.Stdout, quorumLine(resp))
	}
	return nil
}

// quorumLine sums up the cluster's health under the table.
func quorumLine(r *sanbootv1.ListClusterMembersResponse) string {
	line := fmt.Sprintf("quorum: %d of %d voting members healthy, %d needed", r.GetHealthyVoters(), r.GetVoters(), r.GetQuorum())
	switch {
	case r.GetHealthyVoters() < r.GetQuorum():
		line += "; QUORUM LOST: no writes until enough members are back (docs/operations.md)"
	case r.GetQuorumAtRisk():
		line += "; AT RISK: losing one more member stops writes"
	}
	if r.GetControllers() == "" {
		line += "; no member runs the controllers"
	} else {
		line += "; controllers on " + r.GetControllers()
	}
	return line
}

func (p printer) members(members []*sanbootv1.ClusterMember) error {
	if p.Structured() {
		return p.StructuredOut("members", printers.ProtoList(members))
	}
	var leaderIndex uint64
	for _, m := range members {
		if m.GetLeader() && m.GetHealthy() {
			leaderIndex = m.GetRaftIndex()
		}
	}
	wide := p.Format == printers.FormatWide
	header := []string{"NAME", "HEALTH", "ROLE", "CONTROLLERS", "RAFT-INDEX", "LAG", "API", "PEER-URLS", "CLIENT-URLS"}
	if wide {
		header = append(header, "ID", "VERSION", "ERROR")
	}
	rows := make([][]string, 0, len(members))
	for _, m := range members {
		health, role, ctrl, index, lag := "healthy", "follower", "", "-", "-"
		if !m.GetHealthy() {
			health = "UNHEALTHY"
		}
		switch {
		case m.GetLearner():
			role = "learner"
		case m.GetLeader():
			role = "leader"
		}
		if m.GetControllers() {
			ctrl = "yes"
		}
		if m.GetHealthy() {
			index = strconv.FormatUint(m.GetRaftIndex(), 10)
			if leaderIndex > 0 {
				lag = strconv.FormatUint(leaderIndex-min(leaderIndex, m.GetRaftIndex()), 10)
			}
		}
		row := []string{printers.OrNone(m.GetName()), health, role, printers.OrNone(ctrl), index, lag, printers.OrNone(strings.Join(m.GetApiEndpoints(), ",")),
			printers.OrNone(strings.Join(m.GetPeerUrls(), ",")), printers.OrNone(strings.Join(m.GetClientUrls(), ","))}
		if wide {
			row = append(row, m.GetId(), printers.OrNone(m.GetVersion()), printers.OrNone(m.GetError()))
		}
		rows = append(rows, row)
	}
	return p.Table(header, rows)
}

func newMemberAddCmd(s *session) *cobra.Command {
	o := &memberAddOptions{}
	cmd := &cobra.Command{
		Use:   "add NAME --peer-urls URL[,URL...]",
		Short: "Add a member as a learner; prints the flags it must start with",
		Long: `Adds a member to the cluster as a learner (it receives the data but does not
vote), as etcd's runtime reconfiguration does, and prints the flags the new
member must start with. Once it has caught up, promote it.`,
		Example: `  sanbootctl member add cp4 --peer-urls https://10.0.0.4:2380`,
		Args:    cobra.ExactArgs(1),
		RunE:    runOptions(s, o),
	}
	cmd.Flags().StringSliceVar(&o.peerURLs, "peer-urls", nil, "URLs the other members reach the new one at (its --initial-advertise-peer-urls)")
	_ = cmd.MarkFlagRequired("peer-urls")
	return cmd
}

// memberAddOptions are member add's (options.go).
type memberAddOptions struct {
	nameArg
	peerURLs []string // --peer-urls
}

func (o *memberAddOptions) validate() error { return nil }

// run adds the learner and prints the flags it must start with.
func (o *memberAddOptions) run(ctx context.Context, s *session) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	resp, err := c.AddMember(ctx, &sanbootv1.AddMemberRequest{Name: o.name, PeerUrls: o.peerURLs})
	if err != nil {
		return s.rpcError(err)
	}
	m := resp.GetMember()
	w := s.env.Stdout
	fmt.Fprintf(w, "member/%s added as a learner (id %s)\n\n", m.GetName(), m.GetId())
	fmt.Fprintf(w, "Start it with these flags (and its own --data-dir, client and API URLs, TLS files):\n")
	fmt.Fprintf(w, "  --name=%s \\\n", m.GetName())
	fmt.Fprintf(w, "  --initial-advertise-peer-urls=%s \\\n", strings.Join(m.GetPeerUrls(), ","))
	fmt.Fprintf(w, "  --initial-cluster=%s \\\n", resp.GetInitialCluster())
	fmt.Fprintf(w, "  --initial-cluster-state=existing\n\n")
	fmt.Fprintf(w, "then, once sanbootctl member list shows it healthy with a small lag:\n  sanbootctl member promote %s\n", m.GetName())
	return nil
}

func newMemberPromoteCmd(s *session) *cobra.Command {
	o := &memberPromoteOptions{}
	return &cobra.Command{
		Use:     "promote NAME",
		Short:   "Make a learner that has caught up a voting member",
		Example: `  sanbootctl member promote cp4`,
		Args:    cobra.ExactArgs(1),
		RunE:    runOptions(s, o),
	}
}

// memberPromoteOptions are member promote's (options.go).
type memberPromoteOptions struct{ nameArg }

func (o *memberPromoteOptions) validate() error { return nil }

func (o *memberPromoteOptions) run(ctx context.Context, s *session) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	resp, err := c.PromoteMember(ctx, &sanbootv1.PromoteMemberRequest{Name: o.name})
	if err != nil {
		return s.rpcError(err)
	}
	fmt.Fprintf(s.env.Stdout, "member/%s promoted\n", resp.GetMember().GetName())
	return nil
}

func newMemberRemoveCmd(s *session) *cobra.Command {
	o := &memberRemoveOptions{}
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a member (refused when it would break quorum, unless --force)",
		Example: `  sanbootctl member remove cp1
  sanbootctl member remove 8e9e05c52164694d   # a member added but never started, by ID`,
		Aliases: []string{"rm"},
		Args:    cobra.ExactArgs(1),
		RunE:    runOptions(s, o),
	}
	cmd.Flags().BoolVar(&o.force, "force", false, "remove even when the healthy voting members left would not make a quorum")
	return cmd
}

// memberRemoveOptions are member remove's (options.go).
type memberRemoveOptions struct {
	nameArg      // or the member's ID
	force   bool // --force
}

func (o *memberRemoveOptions) validate() error { return nil }

func (o *memberRemoveOptions) run(ctx context.Context, s *session) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	resp, err := c.RemoveMember(ctx, &sanbootv1.RemoveMemberRequest{Name: o.name, Force: o.force})
	if err != nil {
		return s.rpcError(err)
	}
	m := resp.GetMember()
	name := m.GetName()
	if name == "" {
		name = m.GetId()
	}
	fmt.Fprintf(s.env.Stdout, "member/%s removed\n", name)
	if m.GetHealthy() {
		fmt.Fprintf(s.env.Stdout, "its sanboot-controlplane stops by itself (exit 0); delete its --data-dir before using the host again\n")
	}
	return nil
}

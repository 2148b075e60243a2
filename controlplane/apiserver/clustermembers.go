package apiserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/etcdauth"
)

// Membership: the etcd members of the control plane (etcd's member list,
// each member's status, its sanboot registration) and the changes an
// operator makes to them, as etcd's runtime-reconfiguration guide does
// them: a new member joins as a learner, is promoted once it has caught up,
// and a removal that would leave too few voters for a quorum is refused
// unless forced.

// memberStatusTimeout bounds each member's status request: a member cut
// off from the network is reported unhealthy after it.
const memberStatusTimeout = 2 * time.Second

// ListClusterMembers lists the members with their status.
func (s *Server) ListClusterMembers(ctx context.Context, _ *sanbootv1.ListClusterMembersRequest) (*sanbootv1.ListClusterMembersResponse, error) {
	return s.clusterMembers(ctx)
}

func (s *Server) clusterMembers(ctx context.Context) (*sanbootv1.ListClusterMembersResponse, error) {
	ml, err := s.cli.MemberList(ctx)
	if err != nil {
		return nil, etcdError(ctx, "list the members of", err)
	}
	regs, err := s.read(ctx, list(api.MembersPrefix()))
	if err != nil {
		return nil, err
	}
	resp := &sanbootv1.ListClusterMembersResponse{Controllers: s.controllersLeader(ctx)}
	members := make([]*sanbootv1.ClusterMember, len(ml.Members))
	var wg sync.WaitGroup
	for i, m := range ml.Members {
		name := m.Name
		if name == "" { // added, not started: the name member add was given
			if r, err := s.cli.Get(ctx, api.MemberAddKey(memberID(m.ID))); err == nil && len(r.Kvs) == 1 {
				name = string(r.Kvs[0].Value)
			}
		}
		cm := &sanbootv1.ClusterMember{Name: name, Id: memberID(m.ID), PeerUrls: m.PeerURLs, ClientUrls: m.ClientURLs, Learner: m.IsLearner}
		if r, ok := regs.Members[m.Name]; ok && m.Name != "" {
			cm.ApiEndpoints, cm.Version = r.Msg.GetApiEndpoints(), r.Msg.GetVersion()
		}
		cm.Controllers = m.Name != "" && m.Name == resp.Controllers
		members[i] = cm
		wg.Go(func() { s.memberStatus(ctx, cm, m) })
	}
	wg.Wait()
	slices.SortFunc(members, func(a, b *sanbootv1.ClusterMember) int { return strings.Compare(a.Name+a.Id, b.Name+b.Id) })
	resp.Members = members
	for _, cm := range members {
		if cm.Learner {
			continue
		}
		resp.Voters++
		if cm.Healthy {
			resp.HealthyVoters++
		}
	}
	resp.Quorum = resp.Voters/2 + 1
	resp.QuorumAtRisk = resp.HealthyVoters <= resp.Quorum
	return resp, nil
}

// memberStatus asks member m for its status and fills cm.
func (s *Server) memberStatus(ctx context.Context, cm *sanbootv1.ClusterMember, m *etcdserverpb.Member) {
	if len(m.ClientURLs) == 0 {
		cm.Error = "not started (no client URL yet): start it with the flags member add printed"
		return
	}
	var errs []string
	for _, u := range m.ClientURLs {
		sctx, cancel := context.WithTimeout(ctx, memberStatusTimeout)
		st, err := s.cli.Status(sctx, u)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", u, err))
			continue
		}
		cm.RaftIndex, cm.RaftAppliedIndex, cm.RaftTerm = st.RaftIndex, st.RaftAppliedIndex, st.RaftTerm
		cm.Leader = st.Leader == m.ID // it says it leads (a cut-off leader steps down)
		switch {
		case st.Leader == 0:
			cm.Error = "no leader: cut off from a quorum of members"
		case len(st.Errors) > 0:
			cm.Error = strings.Join(st.Errors, "; ")
		default:
			cm.Healthy = true
		}
		return
	}
	cm.Error = "unreachable: " + strings.Join(errs, "; ")
}

// controllersLeader is the member whose controllers run now.
func (s *Server) controllersLeader(ctx context.Context) string {
	resp, err := s.cli.Get(ctx, api.ElectionPrefix, clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// AddMember adds a member as a learner: it receives the log but does not
// vote until promoted.
func (s *Server) AddMember(ctx context.Context, req *sanbootv1.AddMemberRequest) (*sanbootv1.AddMemberResponse, error) {
	if err := api.ValidateName("name", req.GetName()); err != nil {
		return nil, invalid(err)
	}
	if len(req.GetPeerUrls()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "--peer-urls is empty: give the URL(s) the other members reach the new one at, e.g. https://10.0.0.4:2380")
	}
	for _, p := range req.GetPeerUrls() {
		if u, err := url.Parse(p); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, status.Errorf(codes.InvalidArgument, "peer URL %q is not a URL such as https://10.0.0.4:2380", p)
		}
	}
	ml, err := s.cli.MemberList(ctx)
	if err != nil {
		return nil, etcdError(ctx, "list the members of", err)
	}
	for _, m := range ml.Members {
		if m.Name == req.GetName() {
			return nil, status.Errorf(codes.AlreadyExists, "member %q already exists (id %s): remove it first to replace its host", m.Name, memberID(m.ID))
		}
	}
	// With authorization on, the new member's certificate is an etcd user
	// that must exist before it starts.
	if err := etcdauth.AddMember(ctx, s.cli, req.GetName()); err != nil {
		return nil, etcdError(ctx, "make the etcd user of member "+req.GetName()+" in", err)
	}
	added, err := s.cli.MemberAddAsLearner(ctx, req.GetPeerUrls())
	if err != nil {
		return nil, memberError(ctx, "add member "+req.GetName(), err)
	}
	if _, err := s.cli.Put(ctx, api.MemberAddKey(memberID(added.Member.ID)), req.GetName()); err != nil {
		s.log.Warn("cannot record the name of an added member; name it by its ID until it starts", "member", req.GetName(), "id", memberID(added.Member.ID), "err", err)
	}
	var initial []string
	for _, m := range added.Members {
		name := m.Name
		if m.ID == added.Member.ID {
			name = req.GetName()
		}
		if name == "" { // another member added and not yet started
			continue
		}
		for _, p := range m.PeerURLs {
			initial = append(initial, name+"="+p)
		}
	}
	slices.Sort(initial)
	s.log.Info("audit: member added as a learner", "member", req.GetName(), "id", memberID(added.Member.ID), "peer-urls", req.GetPeerUrls())
	return &sanbootv1.AddMemberResponse{
		Member:         &sanbootv1.ClusterMember{Name: req.GetName(), Id: memberID(added.Member.ID), PeerUrls: added.Member.PeerURLs, Learner: true},
		InitialCluster: strings.Join(initial, ","),
	}, nil
}

// PromoteMember makes a learner a voter. etcd refuses it until the learner
// has caught up with the leader; the error says how far behind it is.
func (s *Server) PromoteMember(ctx context.Context, req *sanbootv1.PromoteMemberRequest) (*sanbootv1.MemberResponse, error) {
	list, err := s.clusterMembers(ctx)
	if err != nil {
		return nil, err
	}
	cm, err := findMember(list, req.GetName())
	if err != nil {
		return nil, err
	}
	if !cm.Learner {
		return nil, status.Errorf(codes.FailedPrecondition, "member %q is already a voting member", req.GetName())
	}
	id, _ := strconv.ParseUint(cm.Id, 16, 64)
	if err := s.promote(ctx, list, id); err != nil {
		if errors.Is(err, rpctypes.ErrMemberLearnerNotReady) {
			return nil, status.Errorf(codes.FailedPrecondition, "member %q has not caught up with the leader yet (%s): wait and promote it again", req.GetName(), lag(list, cm))
		}
		return nil, memberError(ctx, "promote member "+req.GetName(), err)
	}
	s.log.Info("audit: learner promoted to voting member", "member", req.GetName(), "id", cm.Id)
	cm.Learner = false
	return &sanbootv1.MemberResponse{Member: cm}, nil
}

// promote asks etcd's raft leader itself to promote learner id. A follower
// forwards a promotion to its leader without the caller's identity when
// that identity is a TLS certificate (etcd v3.6, etcd-io/etcd#20757 fixed
// it for password tokens only): with authorization on, the leader refuses
// it ("user name is empty") and the call times out. Without a healthy
// leader in list, the promotion goes to any member and etcd says why it
// cannot.
func (s *Server) promote(ctx context.Context, list *sanbootv1.ListClusterMembersResponse, id uint64) error {
	for _, m := range list.Members {
		if !m.Leader || !m.Healthy || len(m.ClientUrls) == 0 {
			continue
		}
		conn, err := s.cli.Dial(m.ClientUrls[0])
		if err != nil {
			break
		}
		defer conn.Close()
		_, err = etcdserverpb.NewClusterClient(conn).MemberPromote(ctx, &etcdserverpb.MemberPromoteRequest{ID: id})
		return rpctypes.Error(err)
	}
	_, err := s.cli.MemberPromote(ctx, id)
	return err
}

// lag says how far member cm's raft log is behind the leader's.
func lag(list *sanbootv1.ListClusterMembersResponse, cm *sanbootv1.ClusterMember) string {
	if !cm.Healthy {
		return "it does not answer: " + cm.Error
	}
	for _, l := range list.Members {
		if l.Leader && l.RaftIndex >= cm.RaftIndex {
			return fmt.Sprintf("raft index %d, the leader's %d", cm.RaftIndex, l.RaftIndex)
		}
	}
	return fmt.Sprintf("raft index %d", cm.RaftIndex)
}

// RemoveMember removes a member from the cluster. Removing a voter that
// would leave fewer healthy voters than a quorum of the cluster that
// remains is refused unless forced.
func (s *Server) RemoveMember(ctx context.Context, req *sanbootv1.RemoveMemberRequest) (*sanbootv1.MemberResponse, error) {
	list, err := s.clusterMembers(ctx)
	if err != nil {
		return nil, err
	}
	cm, err := findMember(list, req.GetName())
	if err != nil {
		return nil, err
	}
	if !cm.Learner && !req.GetForce() {
		voters, healthy := list.Voters-1, list.HealthyVoters
		if cm.Healthy {
			healthy--
		}
		if quorum := voters/2 + 1; voters == 0 || healthy < quorum {
			return nil, status.Errorf(codes.FailedPrecondition,
				"removing member %q would leave %d healthy of %d voting members, fewer than a quorum of %d: the cluster would stop accepting writes; bring the unhealthy members back first, or add --force",
				req.GetName(), healthy, voters, quorum)
		}
	}
	id, _ := strconv.ParseUint(cm.Id, 16, 64)
	if _, err := s.cli.MemberRemove(ctx, id); err != nil {
		return nil, memberError(ctx, "remove member "+req.GetName(), err)
	}
	if _, err := s.cli.Delete(ctx, api.MemberAddKey(cm.Id)); err != nil {
		s.log.Debug("delete the record of an added member", "id", cm.Id, "err", err)
	}
	s.log.Info("audit: member removed", "member", req.GetName(), "id", cm.Id, "force", req.GetForce())
	return &sanbootv1.MemberResponse{Member: cm}, nil
}

func findMember(list *sanbootv1.ListClusterMembersResponse, name string) (*sanbootv1.ClusterMember, error) {
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "give the member's name (or its ID from sanbootctl member list)")
	}
	for _, m := range list.Members {
		if m.Name == name || m.Id == strings.ToLower(name) {
			return proto.CloneOf(m), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no member %q: see sanbootctl member list (a member added but not yet started is named by its ID)", name)
}

// memberError maps etcd's membership errors to gRPC statuses.
func memberError(ctx context.Context, what string, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrPeerURLExist):
		return status.Errorf(codes.AlreadyExists, "%s: a member already has that peer URL", what)
	case errors.Is(err, rpctypes.ErrTooManyLearners):
		return status.Errorf(codes.FailedPrecondition, "%s: etcd allows one learner at a time: promote or remove the current one first", what)
	case errors.Is(err, rpctypes.ErrUnhealthy):
		return status.Errorf(codes.FailedPrecondition, "%s: etcd refused: it adds a member only while every voting member is connected; if one is dead, remove it first (sanbootctl member remove NAME), then add its replacement", what)
	case errors.Is(err, rpctypes.ErrMemberNotFound):
		return status.Errorf(codes.NotFound, "%s: no such member", what)
	case errors.Is(err, rpctypes.ErrMemberNotLearner):
		return status.Errorf(codes.FailedPrecondition, "%s: not a learner", what)
	}
	return etcdError(ctx, what+" in", err)
}

func memberID(id uint64) string { return strconv.FormatUint(id, 16) }

// MembersCollector exports the cluster's membership as this member sees it,
// gathered at each scrape (a status request to every member, bounded by
// memberStatusTimeout): which member leads, how far each is behind, and
// whether quorum is at risk.
func (s *Server) MembersCollector() prometheus.Collector { return membersCollector{s} }

type membersCollector struct{ s *Server }

var (
	descMemberHealthy = prometheus.NewDesc("sanboot_member_healthy",
		"1 if the member answered a status request with a leader, else 0.", []string{"member"}, nil)
	descMemberLeader = prometheus.NewDesc("sanboot_member_raft_leader",
		"1 for the etcd (raft) leader.", []string{"member"}, nil)
	descMemberControllers = prometheus.NewDesc("sanboot_member_controllers",
		"1 for the member that runs the controllers (the elected scheduler).", []string{"member"}, nil)
	descMemberLearner = prometheus.NewDesc("sanboot_member_learner",
		"1 for a learner (not voting yet).", []string{"member"}, nil)
	descMemberLag = prometheus.NewDesc("sanboot_member_raft_lag",
		"Raft entries the member is behind the leader (healthy members only).", []string{"member"}, nil)
	descVoters = prometheus.NewDesc("sanboot_members_voters",
		"Voting members of the cluster.", nil, nil)
	descHealthyVoters = prometheus.NewDesc("sanboot_members_healthy_voters",
		"Voting members that answered with a leader.", nil, nil)
	descQuorumAtRisk = prometheus.NewDesc("sanboot_members_quorum_at_risk",
		"1 when losing one more voting member would stop writes (or they have stopped).", nil, nil)
)

func (c membersCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMemberHealthy, descMemberLeader, descMemberControllers, descMemberLearner, descMemberLag, descVoters, descHealthyVoters, descQuorumAtRisk} {
		ch <- d
	}
}

func (c membersCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*memberStatusTimeout)
	defer cancel()
	resp, err := c.s.clusterMembers(ctx)
	if err != nil {
		c.s.log.Debug("members metrics: cannot list the members", "err", err)
		return
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	var leaderIndex uint64
	for _, m := range resp.Members {
		if m.Leader && m.Healthy {
			leaderIndex = m.RaftIndex
		}
	}
	for _, m := range resp.Members {
		name := cmp.Or(m.Name, m.Id)
		ch <- prometheus.MustNewConstMetric(descMemberHealthy, prometheus.GaugeValue, b(m.Healthy), name)
		ch <- prometheus.MustNewConstMetric(descMemberLeader, prometheus.GaugeValue, b(m.Leader && m.Healthy), name)
		ch <- prometheus.MustNewConstMetric(descMemberControllers, prometheus.GaugeValue, b(m.Controllers), name)
		ch <- prometheus.MustNewConstMetric(descMemberLearner, prometheus.GaugeValue, b(m.Learner), name)
		if m.Healthy && leaderIndex > 0 {
			ch <- prometheus.MustNewConstMetric(descMemberLag, prometheus.GaugeValue, float64(leaderIndex-min(leaderIndex, m.RaftIndex)), name)
		}
	}
	ch <- prometheus.MustNewConstMetric(descVoters, prometheus.GaugeValue, float64(resp.Voters))
	ch <- prometheus.MustNewConstMetric(descHealthyVoters, prometheus.GaugeValue, float64(resp.HealthyVoters))
	ch <- prometheus.MustNewConstMetric(descQuorumAtRisk, prometheus.GaugeValue, b(resp.QuorumAtRisk))
}

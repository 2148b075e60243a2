package cli

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/golden"
)

// The fake's control plane has three fixed members: cp1 leads, cp2
// follows 3 entries behind and cp3 is a learner that does not answer.
func fakeMembers() *sanbootv1.ListClusterMembersResponse {
	return &sanbootv1.ListClusterMembersResponse{
		Members: []*sanbootv1.ClusterMember{
			{Name: "cp1", Id: "8e9e05c52164694d", PeerUrls: []string{"https://10.0.0.1:2380"}, ClientUrls: []string{"https://10.0.0.1:2379"},
				ApiEndpoints: []string{"10.0.0.1:7443"}, Leader: true, Controllers: true, Healthy: true, RaftIndex: 120, Version: "3.6.0"},
			{Name: "cp2", Id: "91bc3c398fb3c146", PeerUrls: []string{"https://10.0.0.2:2380"}, ClientUrls: []string{"https://10.0.0.2:2379"},
				ApiEndpoints: []string{"10.0.0.2:7443"}, Healthy: true, RaftIndex: 117, Version: "3.6.0"},
			{Name: "cp3", Id: "fd422379fda50e48", PeerUrls: []string{"https://10.0.0.3:2380"}, Learner: true, Error: "context deadline exceeded"},
		},
		Voters: 2, HealthyVoters: 2, Quorum: 2, QuorumAtRisk: true, Controllers: "cp1",
	}
}

func (f *fakeSanboot) ListClusterMembers(context.Context, *sanbootv1.ListClusterMembersRequest) (*sanbootv1.ListClusterMembersResponse, error) {
	return fakeMembers(), nil
}

func (f *fakeSanboot) AddMember(_ context.Context, req *sanbootv1.AddMemberRequest) (*sanbootv1.AddMemberResponse, error) {
	return &sanbootv1.AddMemberResponse{
		Member:         &sanbootv1.ClusterMember{Name: req.GetName(), Id: "a1b2c3d4e5f60718", PeerUrls: req.GetPeerUrls(), Learner: true},
		InitialCluster: "cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380," + req.GetName() + "=" + strings.Join(req.GetPeerUrls(), ","),
	}, nil
}

func (f *fakeSanboot) fakeMember(name string) (*sanbootv1.ClusterMember, error) {
	for _, m := range fakeMembers().GetMembers() {
		if m.GetName() == name || m.GetId() == name {
			return m, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no member %q", name)
}

func (f *fakeSanboot) PromoteMember(_ context.Context, req *sanbootv1.PromoteMemberRequest) (*sanbootv1.MemberResponse, error) {
	m, err := f.fakeMember(req.GetName())
	return &sanbootv1.MemberResponse{Member: m}, err
}

func (f *fakeSanboot) RemoveMember(_ context.Context, req *sanbootv1.RemoveMemberRequest) (*sanbootv1.MemberResponse, error) {
	m, err := f.fakeMember(req.GetName())
	if err == nil && m.GetHealthy() && !req.GetForce() {
		return nil, status.Errorf(codes.FailedPrecondition, "removing %s leaves 1 healthy voter of 2 needed: no writes until it is back (--force removes it anyway)", m.GetName())
	}
	return &sanbootv1.MemberResponse{Member: m}, err
}

// TestMemberGolden: member list / add / promote / remove against the
// fake's fixed members, each with a golden transcript in
// testdata/member/ (go test -run TestMemberGolden -update rewrites them).
func TestMemberGolden(t *testing.T) {
	_, addr := seededFake(t)
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"list.txt", []string{"member", "list"}},
		{"list_wide.txt", []string{"member", "ls", "-o", "wide"}},
		{"list.json", []string{"member", "list", "-o", "json"}},
		{"get_members.txt", []string{"get", "members"}},
		{"list_bad_output.txt", []string{"member", "list", "-o", "xml"}},
		{"add.txt", []string{"member", "add", "cp4", "--peer-urls", "https://10.0.0.4:2380"}},
		{"add_no_peer_urls.txt", []string{"member", "add", "cp4"}},
		{"promote.txt", []string{"member", "promote", "cp3"}},
		{"promote_unknown.txt", []string{"member", "promote", "cp9"}},
		{"remove_refused.txt", []string{"member", "remove", "cp2"}},
		{"remove_force.txt", []string{"member", "rm", "cp2", "--force"}},
		{"remove_by_id.txt", []string{"member", "remove", "fd422379fda50e48"}},
		{"remove_two_names.txt", []string{"member", "remove", "cp2", "cp3"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, testCtx(t), nil, append([]string{"--endpoints", addr}, tc.args...)...)
			golden.Check(t, "member/"+tc.golden, transcript(r))
		})
	}
}

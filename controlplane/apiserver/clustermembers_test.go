package apiserver_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// One member: listed healthy, the raft leader, a quorum of one which the
// loss of that one member would break (at risk); the metrics say the same.
// Bad requests are refused before etcd is asked; removing the only voter
// is refused without --force. (Several members: controlplane/ha_test.go.)
func TestClusterMembersOfOne(t *testing.T) {
	e := start(t)
	resp, err := e.api.ListClusterMembers(e.ctx, &sanbootv1.ListClusterMembersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Members) != 1 || !resp.Members[0].Healthy || !resp.Members[0].Leader || resp.Members[0].Learner ||
		resp.Voters != 1 || resp.HealthyVoters != 1 || resp.Quorum != 1 || !resp.QuorumAtRisk {
		t.Fatalf("ListClusterMembers = %v", resp)
	}

	for _, tc := range []struct {
		req  *sanbootv1.AddMemberRequest
		code codes.Code
		msg  string
	}{
		{&sanbootv1.AddMemberRequest{Name: "Bad Name", PeerUrls: []string{"http://127.0.0.1:1"}}, codes.InvalidArgument, "name"},
		{&sanbootv1.AddMemberRequest{Name: "m2"}, codes.InvalidArgument, "--peer-urls is empty"},
		{&sanbootv1.AddMemberRequest{Name: "m2", PeerUrls: []string{"10.0.0.4:2380"}}, codes.InvalidArgument, "not a URL"},
		{&sanbootv1.AddMemberRequest{Name: "default", PeerUrls: []string{"http://127.0.0.1:1"}}, codes.AlreadyExists, "already exists"},
	} {
		_, err := e.api.AddMember(e.ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("AddMember(%v) = %v, want %s with %q", tc.req, err, tc.code, tc.msg)
		}
	}
	_, err = e.api.RemoveMember(e.ctx, &sanbootv1.RemoveMemberRequest{Name: "default"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--force") {
		t.Errorf("RemoveMember of the only voter = %v", err)
	}
	_, err = e.api.PromoteMember(e.ctx, &sanbootv1.PromoteMemberRequest{Name: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("PromoteMember of no member = %v", err)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e.srv.MembersCollector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetGauge().GetValue()
		}
	}
	for name, v := range map[string]float64{
		"sanboot_members_voters": 1, "sanboot_members_healthy_voters": 1, "sanboot_members_quorum_at_risk": 1,
		"sanboot_member_healthy{member=default}": 1, "sanboot_member_raft_leader{member=default}": 1,
		"sanboot_member_raft_lag{member=default}": 0, "sanboot_member_learner{member=default}": 0,
	} {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("metric %s = %v (present %v), want %v; all: %v", name, g, ok, v, got)
		}
	}
}

package dial

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A member whose etcd has no raft leader (it is cut off from a quorum of
// its peers, or quorum is lost) can serve neither writes nor linearizable
// reads. It says so at once instead of making its caller wait for a
// timeout: its answer is Unavailable with an ErrorInfo whose reason is
// ReasonNoLeader, and a trailer that keeps gRPC from making the call again
// on the same connection (NoRetryHere). A connection of this package then
// leaves that member's endpoint for a while and makes the call again on
// another one (failover.go). The member answers so only before its etcd
// accepted anything for the call (a refused request, or one etcd itself
// refused for want of a leader), so the call is safe to make again
// elsewhere, like any Unavailable answer of the API.

// ReasonNoLeader is the ErrorInfo reason of a member without an etcd
// leader; errorDomain its domain.
const (
	ReasonNoLeader = "NO_ETCD_LEADER"
	errorDomain    = "sanboot.io"
)

// NoLeader is the answer of member (its name) whose etcd has no leader;
// detail says since when or why.
func NoLeader(member, detail string) error {
	st := status.New(codes.Unavailable, fmt.Sprintf("control-plane member %s has no etcd leader (%s): it is cut off from a quorum of members; "+
		"use another member (list every member in --endpoints); if none has a leader, quorum is lost (docs/operations.md)", member, detail))
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonNoLeader, Domain: errorDomain, Metadata: map[string]string{"member": member}}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// IsNoLeader says whether err is a member's NoLeader answer.
func IsNoLeader(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	st := se.GRPCStatus()
	if st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == ReasonNoLeader && info.GetDomain() == errorDomain {
			return true
		}
	}
	return false
}

// NoRetryHere is the trailer a server sends with a NoLeader answer: a
// negative retry pushback tells gRPC's retry policy not to make the call
// again on this connection (gRFC A6), where it would only wait again.
func NoRetryHere() metadata.MD { return metadata.Pairs("grpc-retry-pushback-ms", "-1") }

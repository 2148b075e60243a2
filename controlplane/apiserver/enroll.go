package apiserver

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/etcdauth"
)

// EnrollAgent gives the agent of that name its etcd user and role
// (package etcdauth). Admins only (authz.go); idempotent.
func (s *Server) EnrollAgent(ctx context.Context, req *sanbootv1.EnrollAgentRequest) (*sanbootv1.EnrollAgentResponse, error) {
	if err := api.ValidateName("agent name", req.GetName()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !s.cfg.EtcdAuth {
		return nil, status.Error(codes.FailedPrecondition, "etcd authorization is off (the control plane runs without TLS): agents on this host use etcd without enrolling")
	}
	if err := etcdauth.EnrollAgent(ctx, s.cli, req.GetName()); err != nil {
		return nil, etcdError(ctx, "enroll agent "+req.GetName(), err)
	}
	s.log.Info("agent enrolled: its certificate may now use etcd", "agent", req.GetName())
	return &sanbootv1.EnrollAgentResponse{}, nil
}

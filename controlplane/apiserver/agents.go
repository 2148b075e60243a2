package apiserver

import (
	"context"
	"maps"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/view"
)

// ListAgents returns every agent that registered, live or not, with the
// number of nodes assigned to it.
func (s *Server) ListAgents(ctx context.Context, _ *sanbootv1.ListAgentsRequest) (*sanbootv1.ListAgentsResponse, error) {
	st, err := s.read(ctx, list(api.AgentsPrefix()), listKeys(api.AlivePrefix()), listKeys(api.AssignPrefix("")))
	if err != nil {
		return nil, err
	}
	return &sanbootv1.ListAgentsResponse{Agents: view.Agents(st)}, nil
}

// GetAgent returns one agent.
func (s *Server) GetAgent(ctx context.Context, req *sanbootv1.GetAgentRequest) (*sanbootv1.Agent, error) {
	if err := api.ValidateName("name", req.GetName()); err != nil {
		return nil, invalid(err)
	}
	st, err := s.read(ctx, get(api.AgentKey(req.GetName())), get(api.AliveKey(req.GetName())), listKeys(api.AssignPrefix(req.GetName())))
	if err != nil {
		return nil, err
	}
	a := view.Agent(st, req.GetName())
	if a == nil {
		return nil, status.Errorf(codes.NotFound, "agent %q not found: it never registered", req.GetName())
	}
	return a, nil
}

// ListMembers returns the control-plane members that are registered (their
// leases alive), sorted by name.
func (s *Server) ListMembers(ctx context.Context, _ *sanbootv1.ListMembersRequest) (*sanbootv1.ListMembersResponse, error) {
	st, err := s.read(ctx, list(api.MembersPrefix()))
	if err != nil {
		return nil, err
	}
	resp := &sanbootv1.ListMembersResponse{}
	for _, name := range slices.Sorted(maps.Keys(st.Members)) {
		resp.Members = append(resp.Members, st.Members[name].Msg)
	}
	return resp, nil
}

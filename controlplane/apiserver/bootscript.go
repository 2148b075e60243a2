package apiserver

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/boot"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
)

// GetBootScript renders a node's iPXE script as the boot server would serve
// it now (with its CHAP credentials when it is Ready), and the URL the node
// fetches it from. With boot tokens on, every call issues a new one-time
// token for the URL, which replaces the node's last one.
//
// This is the one read of the API that returns CHAP secrets: they are in
// the script, where the node needs them.
func (s *Server) GetBootScript(ctx context.Context, req *sanbootv1.GetRequest) (*sanbootv1.BootScript, error) {
	ref, err := refOf(req.GetProject(), req.GetName())
	if err != nil {
		return nil, err
	}
	resp, err := s.cli.Txn(ctx).Then(
		get(api.NodeKey(ref.Project, ref.Name)),
		get(api.PlacementKey(ref.Project, ref.Name)),
		listKeys(api.AlivePrefix()),
		get(api.SecretKey(ref.Project, ref.Name)),
		list(api.AgentsPrefix()),
	).Commit()
	if err != nil {
		return nil, etcdError(ctx, "read", err)
	}
	kvss := make([][]*mvccpb.KeyValue, 0, len(resp.Responses))
	for _, r := range resp.Responses {
		kvss = append(kvss, r.GetResponseRange().GetKvs())
	}
	st := state.New(s.log, state.Nodes, state.Placements, state.NodeStatus, state.Alive, state.Secrets, state.Agents)
	st.Apply(state.BatchFromKVs(resp.Header.Revision, kvss...))
	if err := s.readStatus(ctx, st, ref); err != nil {
		return nil, err
	}
	n := view.Node(st, ref)
	if n == nil {
		return nil, notFound("node", ref)
	}
	var secret *sanbootv1.ChapSecret
	if rec, ok := st.Secrets[ref]; ok {
		secret = rec.Msg
	}

	settings := s.cfg.Boot
	token := ""
	if settings.Tokens {
		token, err = boot.IssueToken(ctx, s.cli, ref, n.GetMetadata().GetUid(), settings.TokenTTL)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "%v; retry", err)
		}
	}
	// The image names the boot loader UEFI nodes run from the disk.
	iref := state.Ref{Project: ref.Project, Name: n.GetSpec().GetImage()}
	ist, err := s.read(ctx, get(api.ImageKey(iref.Project, iref.Name)))
	if err != nil {
		return nil, err
	}
	plan := boot.PlanNode(n, ist.Images[iref].Msg, secret).WithFailover(boot.FailoverOf(st, n))
	url := settings.NodeURL(ref, token)
	s.log.Info("boot script handed out", "node", ref, "ready", plan.Ready(), "token", token != "")
	// The script refers to itself by its absolute URL: it may be used away
	// from the boot server (embedded in iPXE, or given to it as a file).
	return &sanbootv1.BootScript{Script: settings.Render(plan, url), Url: url}, nil
}

package apiserver

import (
	"context"
	"log/slog"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/pki"
)

// Authorization. Every call's caller is the identity of its verified
// client certificate (package pki: CN = name, OU = role, O = projects).
// What a role may call:
//
//	agent   only the AgentData service (the image data path: ReadUpload,
//	        PushExport), and nothing of Sanboot
//	user    the calls on nodes and images of its projects, and
//	        ListMembers (the members' API addresses, which clients
//	        learn to fail over: package dial)
//	admin   everything, -A (all projects) and the cluster-wide objects
//	        (agents, members, backup)
//	member  nothing but the health service (its own readiness check)
//
// A connection without TLS reaches the API only on loopback (the listener
// refuses other addresses without TLS): its caller is trusted as before
// TLS existed, an admin and an agent at once. Every mutating call is logged (an "audit" line) with the
// caller, the method, the project and name it touched and the outcome;
// never a request's content.

type callerKey struct{}

// Caller is who makes a call.
type Caller struct {
	pki.Identity
	// Insecure: a plaintext connection on loopback.
	Insecure bool
}

func (c Caller) String() string {
	if c.Insecure {
		return "local operator (no TLS, loopback)"
	}
	return c.Identity.String()
}

// CallerFrom returns the caller of the call of ctx.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

func (c Caller) admin() bool { return c.Insecure || c.Role == pki.RoleAdmin }

// methodClass says who may call a method.
type methodClass int

const (
	classProject methodClass = iota // users of the request's project, admins
	classAdmin                      // admins only
	classAgent                      // agents only
	classPublic                     // anyone with a certificate of the CA
)

const (
	service      = "/" + "sanboot.v1.Sanboot" + "/"
	agentService = "/" + "sanboot.v1.AgentData" + "/"
)

var methodClasses = map[string]methodClass{
	service + "ListAgents":         classAdmin,
	service + "GetAgent":           classAdmin,
	service + "WatchAgents":        classAdmin,
	service + "ListClusterMembers": classAdmin,
	service + "AddMember":          classAdmin,
	service + "PromoteMember":      classAdmin,
	service + "RemoveMember":       classAdmin,
	service + "Backup":             classAdmin,
	service + "EnrollAgent":        classAdmin,
}

// mutating methods get an audit line.
var mutating = map[string]bool{
	service + "PutImage": true, service + "DeleteImage": true,
	service + "PutNode": true, service + "DeleteNode": true,
	service + "UploadImage": true, service + "GetBootScript": true,
	service + "Backup": true, service + "EnrollAgent": true,
}

func classOf(method string) methodClass {
	if strings.HasPrefix(method, agentService) {
		return classAgent
	}
	if !strings.HasPrefix(method, service) {
		return classPublic // the health service
	}
	if c, ok := methodClasses[method]; ok {
		return c
	}
	return classProject
}

// callerOf reads the caller from the connection's verified certificate.
func callerOf(ctx context.Context) (Caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Caller{Insecure: true, Identity: pki.Identity{Name: "local", Role: pki.RoleAdmin}}, nil
	}
	if len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return Caller{}, status.Error(codes.Unauthenticated, "no verified client certificate: present one issued by the cluster's CA (--cert, --key)")
	}
	id, err := pki.IdentityOf(ti.State.VerifiedChains[0][0])
	if err != nil {
		return Caller{}, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	return Caller{Identity: id}, nil
}

// allowMethod checks the caller's role against the method's class.
func allowMethod(c Caller, method string) error {
	short := method[strings.LastIndex(method, "/")+1:]
	switch classOf(method) {
	case classPublic:
		return nil
	case classAgent:
		if c.Role == pki.RoleAgent || c.Insecure {
			return nil
		}
		return status.Errorf(codes.PermissionDenied, "%s is for agents; %s may not call it", short, c)
	case classAdmin:
		if c.admin() {
			return nil
		}
		return status.Errorf(codes.PermissionDenied, "%s is cluster-wide, for admins only; %s is not one (sanbootctl pki issue user NAME --admin)", short, c)
	default:
		if c.admin() || c.Role == pki.RoleUser {
			return nil
		}
		return status.Errorf(codes.PermissionDenied, "%s is for users; %s may not call it (use a user's certificate: sanbootctl pki issue user)", short, c)
	}
}

// scope is what a request message touches.
type scope struct {
	project string
	name    string
	all     bool
	known   bool
}

func scopeOf(msg any) scope {
	var s scope
	switch m := msg.(type) {
	case *sanbootv1.PutNodeRequest:
		s = scope{project: m.GetNode().GetMetadata().GetProject(), name: m.GetNode().GetMetadata().GetName(), known: true}
	case *sanbootv1.PutImageRequest:
		s = scope{project: m.GetImage().GetMetadata().GetProject(), name: m.GetImage().GetMetadata().GetName(), known: true}
	case *sanbootv1.UploadImageRequest:
		if m.GetHeader() == nil {
			return scope{} // a chunk: the header was checked
		}
		s = scope{project: m.GetHeader().GetProject(), known: true}
	default:
		if p, ok := msg.(interface{ GetProject() string }); ok {
			s.project, s.known = p.GetProject(), true
		}
		if n, ok := msg.(interface{ GetName() string }); ok {
			s.name = n.GetName()
		}
		if a, ok := msg.(interface{ GetAllProjects() bool }); ok {
			s.all = a.GetAllProjects()
		}
	}
	if s.known && s.project == "" {
		s.project = "default"
	}
	return s
}

// allowScope checks a project-scoped request against the caller's projects.
func allowScope(c Caller, method string, s scope) error {
	if classOf(method) != classProject || c.admin() || !s.known {
		return nil
	}
	if s.all {
		return status.Errorf(codes.PermissionDenied, "all projects (-A) are for admins; %s may list its projects one at a time: %s", c, strings.Join(c.Projects, ", "))
	}
	if !slices.Contains(c.Projects, s.project) {
		return status.Errorf(codes.PermissionDenied, "project %q: %s is not a member of it (its projects: %s)", s.project, c, strings.Join(c.Projects, ", "))
	}
	return nil
}

// authorize is the unary and stream interceptors' common part.
func authorize(ctx context.Context, method string) (context.Context, Caller, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return ctx, c, err
	}
	if err := allowMethod(c, method); err != nil {
		return ctx, c, err
	}
	return context.WithValue(ctx, callerKey{}, c), c, nil
}

func audit(log *slog.Logger, method string, c Caller, s scope, err error) {
	if !mutating[method] {
		return
	}
	log.Info("audit", "method", strings.TrimPrefix(method, service), "caller", c.Name, "role", string(c.Role),
		"insecure", c.Insecure, "project", s.project, "name", s.name, "code", status.Code(err).String())
}

// authzInterceptors authorize every call and audit the mutating ones.
func authzInterceptors(log *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, c, err := authorize(ctx, info.FullMethod)
		s := scopeOf(req)
		if err == nil {
			err = allowScope(c, info.FullMethod, s)
		}
		if err != nil {
			audit(log, info.FullMethod, c, s, err)
			return nil, err
		}
		resp, err := h(ctx, req)
		audit(log, info.FullMethod, c, s, err)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, c, err := authorize(ss.Context(), info.FullMethod)
		if err != nil {
			audit(log, info.FullMethod, c, scope{}, err)
			return err
		}
		w := &authzStream{ServerStream: ss, ctx: ctx, caller: c, method: info.FullMethod}
		err = h(srv, w)
		audit(log, info.FullMethod, c, w.scope, err)
		return err
	}
	return unary, stream
}

// authzStream checks every message received against the caller's projects.
type authzStream struct {
	grpc.ServerStream
	ctx    context.Context
	caller Caller
	method string
	scope  scope // of the first scoped message
}

func (s *authzStream) Context() context.Context { return s.ctx }

func (s *authzStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	sc := scopeOf(m)
	if sc.known && !s.scope.known {
		s.scope = sc
	}
	if err := allowScope(s.caller, s.method, sc); err != nil {
		return err
	}
	return nil
}

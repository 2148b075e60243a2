package apiserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/boot"
	"github.com/sanboot/sanboot/controlplane/informer"
	"github.com/sanboot/sanboot/controlplane/staging"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/dial"
	"github.com/sanboot/sanboot/internal/kv"
)

// Config tunes a Server; the zero value is usable.
type Config struct {
	Log *slog.Logger
	// WatchBuffer is how many events a WatchNodes stream may fall behind
	// before it is ended (default 16384).
	WatchBuffer int
	// Member is this control-plane member's name: uploads staged here and
	// exports relayed here name it, and agents find its API address at
	// api.MemberKey(Member). Empty: uploads and exports are refused.
	Member string
	// Uploads is where UploadImage stages bytes (see uploads.go); nil:
	// uploads are refused.
	Uploads *staging.Area
	// UploadTTL is how long a staged upload that no image refers to is
	// kept (default 24h). UploadGCInterval is how often staged uploads are
	// checked (default 5 min).
	UploadTTL, UploadGCInterval time.Duration
	// ExportStartTimeout bounds how long ExportImage waits for the agent to
	// start pushing (default 1 min).
	ExportStartTimeout time.Duration
	// Boot is how GetBootScript renders scripts and URLs: the boot
	// server's settings.
	Boot boot.Settings
	// EtcdAuth says that etcd's authorization is on (with TLS): agents
	// need EnrollAgent before they can use etcd.
	EtcdAuth bool
	// Informer is the member's shared watch of etcd, which feeds the
	// watch cache; the caller runs it. Nil: the server makes its own and
	// Run runs it.
	Informer *informer.Informer
	// HasLeader says whether this member's etcd has a raft leader; calls
	// wait up to LeaderWait (default DefaultLeaderWait) for one, then are
	// refused (leader.go). Nil: no such check.
	HasLeader  func() bool
	LeaderWait time.Duration
}

// Server implements sanbootv1.SanbootServer. Create it with New, call Run
// to feed its watch cache, and register it with Register.
type Server struct {
	sanbootv1.UnimplementedSanbootServer
	sanbootv1.UnimplementedAgentDataServer
	cli   *clientv3.Client
	log   *slog.Logger
	cache *cache
	cfg   Config
	// ownInformer is set when the server made its informer (Run runs it).
	ownInformer bool
	// exports in flight on this member, by export id.
	exports exportTable
	metrics *metrics
	// events are the recent events of each node (events.go).
	events *eventLog
	// lists are the snapshots of node lists whose next pages are to come
	// (listcache.go).
	lists listSnapshots
}

// New returns a server over cli.
func New(cli *clientv3.Client, cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.WatchBuffer <= 0 {
		cfg.WatchBuffer = 16384
	}
	if cfg.UploadTTL <= 0 {
		cfg.UploadTTL = staging.DefaultUploadTTL
	}
	if cfg.UploadGCInterval <= 0 {
		cfg.UploadGCInterval = 5 * time.Minute
	}
	if cfg.LeaderWait <= 0 {
		cfg.LeaderWait = DefaultLeaderWait
	}
	if cfg.ExportStartTimeout <= 0 {
		cfg.ExportStartTimeout = time.Minute
	}
	log := cfg.Log.With("component", "apiserver")
	m := newMetrics()
	own := cfg.Informer == nil
	if own {
		cfg.Informer = informer.New(cli, cfg.Log)
	}
	c := newCache(cfg.Informer, cli, log, cfg.WatchBuffer)
	ev := newEventLog(eventsPerNode)
	c.onChange = func(old, cur *sanbootv1.Node) {
		m.observeReady(old, cur)
		ev.observe(old, cur)
	}
	return &Server{cli: cli, log: log, cache: c, cfg: cfg, ownInformer: own, exports: newExportTable(), metrics: m, events: ev}
}

// Run feeds the watch cache (and runs its informer, if the server made
// it) and collects staged uploads until ctx ends; WatchNodes streams end
// then.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if s.ownInformer {
		wg.Go(func() { s.cfg.Informer.Run(ctx) })
	}
	if s.cfg.Uploads != nil {
		wg.Go(func() { s.uploadGC().Run(ctx, s.cfg.UploadGCInterval) })
	}
	wg.Go(func() {
		for delay := time.Second; ; delay = min(2*delay, time.Minute) {
			_, err := s.IndexMACs(ctx)
			if err == nil || ctx.Err() != nil {
				return
			}
			s.log.Warn("could not index the MACs of existing nodes; retrying", "err", err, "in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	})
	s.cache.run(ctx)
	return ctx.Err()
}

// Register adds the Sanboot service, the agents' AgentData service and the
// standard health service to
// gs. The health server says SERVING for "" and "sanboot.v1.Sanboot";
// call its Shutdown when stopping.
func (s *Server) Register(gs *grpc.Server) *health.Server {
	sanbootv1.RegisterSanbootServer(gs, s)
	sanbootv1.RegisterAgentDataServer(gs, s)
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(sanbootv1.Sanboot_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, h)
	return h
}

// ServerOptions are the gRPC options the service needs: interceptors that
// turn a panic into codes.Internal (logged with its stack) instead of
// killing the process, then authorize each call by its caller's
// certificate and audit the mutating ones (authz.go).
func ServerOptions(log *slog.Logger) []grpc.ServerOption {
	authzUnary, authzStream := authzInterceptors(log)
	recovered := func(method string, r any) error {
		log.Error("panic in RPC handler", "method", method, "panic", r, "stack", string(debug.Stack()))
		return status.Errorf(codes.Internal, "internal error in %s (logged on the server); please report it", method)
	}
	codec := newStrictCodec()
	return []grpc.ServerOption{
		// Clients ping to notice a member cut off (dial.KeepaliveTime).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: dial.KeepaliveTime / 2, PermitWithoutStream: true}),
		grpc.ForceServerCodecV2(codec),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			defer func() {
				if r := recover(); r != nil {
					resp, err = nil, recovered(info.FullMethod, r)
				}
			}()
			return h(ctx, req)
		}, codec.unary, authzUnary),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = recovered(info.FullMethod, r)
				}
			}()
			return h(srv, ss)
		}, codec.stream, authzStream),
	}
}

// read runs range reads in one transaction, so that they all see one
// revision, and loads what they return into a store.
func (s *Server) read(ctx context.Context, ops ...clientv3.Op) (*state.Store, error) {
	resp, err := retryElection(ctx, s.cli.Txn(ctx).Then(ops...).Commit)
	if errors.Is(err, rpctypes.ErrCompacted) {
		return nil, errCompactedWhilePaging
	}
	if err != nil {
		return nil, etcdError(ctx, "read", err)
	}
	return s.readStore(resp.Header.Revision, resp.Responses), nil
}

// errCompactedWhilePaging is the error of a read at a revision etcd has
// compacted away.
var errCompactedWhilePaging = status.Error(codes.FailedPrecondition, "the revision this list was being read at is gone (etcd compacted it) "+
	"while paging: list again from the first page")

// retryElection makes call, a read, again (up to 6 times in about 3 s)
// while etcd answers that its raft leader changed or that it has none: a
// read is safe to repeat, and an election (a member died or was removed)
// is over in a moment, which the caller need not hear about.
func retryElection[T any](ctx context.Context, call func() (T, error)) (T, error) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		v, err := call()
		if err == nil || attempt == 6 || !(errors.Is(err, rpctypes.ErrLeaderChanged) || errors.Is(err, rpctypes.ErrNoLeader)) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// readStore decodes the range responses of a transaction, made at rev,
// into a store.
func (s *Server) readStore(rev int64, responses []*etcdserverpb.ResponseOp) *state.Store {
	kvss := make([][]*mvccpb.KeyValue, 0, len(responses))
	for _, r := range responses {
		kvss = append(kvss, r.GetResponseRange().GetKvs())
	}
	return s.storeOf(rev, kvss...)
}

// storeOf decodes key-values read at rev into a store.
func (s *Server) storeOf(rev int64, kvss ...[]*mvccpb.KeyValue) *state.Store {
	st := state.New(s.log, state.Images, state.Replicas, state.Nodes, state.Placements, state.Assign,
		state.NodeStatus, state.Agents, state.Alive, state.Members, state.MACs)
	st.Apply(state.BatchFromKVs(rev, kvss...))
	return st
}

func get(key string, opts ...clientv3.OpOption) clientv3.Op { return clientv3.OpGet(key, opts...) }

func list(prefix string, opts ...clientv3.OpOption) clientv3.Op {
	return clientv3.OpGet(prefix, append(opts, clientv3.WithPrefix())...)
}

func listKeys(prefix string, opts ...clientv3.OpOption) clientv3.Op {
	return clientv3.OpGet(prefix, append(opts, clientv3.WithPrefix(), clientv3.WithKeysOnly())...)
}

// write commits a transaction; a failed comparison is kv.ErrConflict.
func (s *Server) write(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (int64, error) {
	resp, err := s.commit(ctx, cmps, ops, nil)
	if err != nil {
		return 0, etcdError(ctx, "write", err)
	}
	if !resp.Succeeded {
		return 0, kv.ErrConflict
	}
	return resp.Header.Revision, nil
}

// Write attempts. etcd keeps a write that a follower forwarded to its raft
// leader until the write's request timeout (5 s + twice the election
// timeout: 7 s with the defaults) even when the leader died before
// committing it and the write is lost: every write made in the second or
// two before the followers notice a raft leader's death would wait 7 s.
// commit abandons an attempt that has no answer after writeAttempt (etcd's
// default election timeout: a single write takes milliseconds) and makes
// it again, at most abandonAttempts times (followers elect a new raft
// leader within 1 to 2 election timeouts); then it waits as long as the
// caller's context allows.
const (
	writeAttempt    = time.Second
	abandonAttempts = 4
)

// commit runs the transaction If(cmps).Then(ops).Else(elseOps), making it
// again when an attempt has no answer in time (see writeAttempt). An
// abandoned attempt may yet have committed (the dead leader had replicated
// it): when a later attempt's comparisons fail, commit reads the keys of
// ops, and if etcd holds exactly what ops write (puts' values; deleted keys
// absent) the write succeeded, and commit says so.
func (s *Server) commit(ctx context.Context, cmps []clientv3.Cmp, ops, elseOps []clientv3.Op) (*clientv3.TxnResponse, error) {
	abandoned := 0
	for {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if abandoned < abandonAttempts {
			actx, cancel = context.WithTimeout(ctx, writeAttempt)
		}
		resp, err := s.cli.Txn(actx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
		late := err != nil && actx.Err() != nil && ctx.Err() == nil
		cancel()
		if late {
			abandoned++
			s.log.Warn("etcd did not answer a write in time (its raft leader may have just died); writing again", "after", writeAttempt, "attempt", abandoned)
			continue
		}
		if err != nil || resp.Succeeded || abandoned == 0 || len(cmps) == 0 {
			return resp, err
		}
		rev, done, err := s.applied(ctx, ops)
		if err != nil || !done {
			return resp, err
		}
		s.log.Info("an abandoned write attempt had committed", "rev", rev)
		return &clientv3.TxnResponse{Header: &etcdserverpb.ResponseHeader{Revision: rev}, Succeeded: true}, nil
	}
}

// applied says whether etcd holds what ops write: every put's value at its
// key, every deleted key gone; any other op cannot be checked (false).
func (s *Server) applied(ctx context.Context, ops []clientv3.Op) (int64, bool, error) {
	gets := make([]clientv3.Op, len(ops))
	for i, op := range ops {
		if !op.IsPut() && !op.IsDelete() || op.IsDelete() && op.RangeBytes() != nil {
			return 0, false, nil
		}
		gets[i] = clientv3.OpGet(string(op.KeyBytes()))
	}
	resp, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return 0, false, err
	}
	for i, op := range ops {
		kvs := resp.Responses[i].GetResponseRange().GetKvs()
		switch {
		case op.IsDelete() && len(kvs) != 0:
			return 0, false, nil
		case op.IsPut() && (len(kvs) != 1 || !bytes.Equal(kvs[0].Value, op.ValueBytes())):
			return 0, false, nil
		}
	}
	return resp.Header.Revision, true, nil
}

// etcdError maps an etcd client error to a gRPC status.
func etcdError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Errorf(codes.Unavailable, "%s etcd: %v; retry, or try another control-plane member", what, err)
}

// retryConflict runs attempt until its write does not lose a race
// (kv.ErrConflict): again, up to retries times, when retry (no revision
// was asked for, so a read-modify-write may start over), else once; never
// again for errStale (the object itself is not at the revision asked for).
// A race still lost is conflict(what).
func retryConflict[T any](retry bool, what string, attempt func() (T, error)) (T, error) {
	for i := 1; ; i++ {
		v, err := attempt()
		if errors.Is(err, kv.ErrConflict) {
			if retry && i < retries && !errors.Is(err, errStale) {
				continue
			}
			var zero T
			return zero, conflict(what)
		}
		return v, err
	}
}

// conflict is the error of a write that lost a race.
func conflict(what string) error {
	return status.Errorf(codes.Aborted, "%s changed since it was read (someone else wrote it): read it again and retry", what)
}

// invalid maps a validation error (api.FieldError joined) to InvalidArgument.
func invalid(err error) error {
	return status.Error(codes.InvalidArgument, err.Error())
}

// apiError passes gRPC statuses through and maps anything else.
func apiError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, kv.ErrConflict) {
		return status.Error(codes.Aborted, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func newUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// refOf validates a project and a name from a request.
func refOf(project, name string) (state.Ref, error) {
	ref := state.Ref{Project: api.ProjectOrDefault(project), Name: name}
	if err := errors.Join(api.ValidateName("project", ref.Project), api.ValidateName("name", ref.Name)); err != nil {
		return ref, invalid(err)
	}
	return ref, nil
}

func notFound(kind string, ref state.Ref) error {
	return status.Errorf(codes.NotFound, "%s %q not found in project %q", kind, ref.Name, ref.Project)
}

// retries is how often a write without an expected revision is tried again
// after losing a race, before the caller is told to retry.
const retries = 5

func describe(kind string, ref state.Ref) string {
	return fmt.Sprintf("%s %q in project %q", kind, ref.Name, ref.Project)
}

// newMeta is the metadata of a record created now: generation 1, a new uid.
func newMeta(ref state.Ref, labels map[string]string) *sanbootv1.ObjectMeta {
	return &sanbootv1.ObjectMeta{
		Project: ref.Project, Name: ref.Name, Labels: labels,
		Generation: 1, CreateTime: timestamppb.Now(), Uid: newUID(),
	}
}

// checkPutMode refuses a PutMode this server does not know (a newer
// client's, or garbage) instead of taking it for APPLY.
func checkPutMode(m sanbootv1.PutMode) error {
	if _, ok := sanbootv1.PutMode_name[int32(m)]; !ok {
		return status.Errorf(codes.InvalidArgument, "mode: %d is not a PutMode: use PUT_MODE_APPLY (0) or PUT_MODE_CREATE (1)", int32(m))
	}
	return nil
}

// checkDeleteRevision refuses a negative revision (0 means any).
func checkDeleteRevision(rev int64) error {
	if rev < 0 {
		return status.Errorf(codes.InvalidArgument, "revision: %d is negative: give the revision you read, or 0 for any", rev)
	}
	return nil
}

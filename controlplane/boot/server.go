package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/informer"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/kv"
)

// Config configures a Server.
type Config struct {
	Settings
	Log *slog.Logger
	// Informer is the member's shared watch of etcd, which scripts are
	// made from; the caller runs it. Nil: the server makes its own and
	// Run runs it.
	Informer *informer.Informer
}

// Server serves boot scripts over HTTP from a cache of etcd's records.
// Create it with NewServer and call Run.
type Server struct {
	cli   *clientv3.Client
	cfg   Config
	log   *slog.Logger
	cache *cache
	// ownInformer is the informer the server made (Run runs it), or nil.
	ownInformer *informer.Informer
	mux         *http.ServeMux
	// others are the boot URLs of the other members (their
	// registrations), which scripts fall back to.
	others atomic.Pointer[[]string]
}

// NewServer returns a boot server over cli.
func NewServer(cli *clientv3.Client, cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	log := cfg.Log.With("component", "boot")
	s := &Server{cli: cli, cfg: cfg, log: log}
	if cfg.Informer == nil {
		s.ownInformer = informer.New(cli, cfg.Log)
		cfg.Informer = s.ownInformer
	}
	s.cache = newCache(cfg.Informer, log)
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /boot.ipxe", s.generic)
	s.mux.HandleFunc("GET /boot", s.byMAC)
	s.mux.HandleFunc("GET /boot/{project}/{node}", s.byName)
	return s
}

// Handler is the server's HTTP handler (for tests and for embedding).
// Scripts say the boot server is starting until Run has read etcd once.
func (s *Server) Handler() http.Handler { return s.mux }

// Run feeds the cache and serves HTTP on lis until ctx ends, then lets
// requests in flight finish for up to 5 s.
func (s *Server) Run(ctx context.Context, lis net.Listener) error {
	hs := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	if s.ownInformer != nil {
		wg.Go(func() { s.ownInformer.Run(ctx) })
	}
	wg.Go(func() { s.cache.run(ctx) })
	wg.Go(func() { s.watchOthers(ctx) })
	errc := make(chan error, 1)
	wg.Go(func() {
		s.log.Info("boot server serving", "addr", lis.Addr().String(), "tokens", s.cfg.Tokens)
		if !s.cfg.Tokens {
			s.log.Warn("boot tokens are off: whoever reaches the boot server can fetch the CHAP credentials of any node; " +
				"serve it on a provisioning network only, or turn on --boot-tokens (docs/boot.md)")
		}
		if err := hs.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("boot server: %w", err)
			cancel()
		}
	})
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer scancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// othersEvery is how often the other members' boot URLs are read again.
const othersEvery = 10 * time.Second

// watchOthers keeps s.others: the boot URLs the other members registered
// (api.MemberKey), sorted, this server's own left out.
func (s *Server) watchOthers(ctx context.Context) {
	own := s.cfg.URL
	if own == "" && s.cfg.Listen != "" {
		own = "http://" + s.cfg.Listen
	}
	for {
		resp, err := s.cli.Get(ctx, api.MembersPrefix(), clientv3.WithPrefix())
		if err == nil {
			var others []string
			for _, kv := range resp.Kvs {
				var m sanbootv1.Member
				if proto.Unmarshal(kv.Value, &m) != nil {
					continue
				}
				if u := strings.TrimSuffix(m.GetBootUrl(), "/"); u != "" && u != strings.TrimSuffix(own, "/") {
					others = append(others, u)
				}
			}
			slices.Sort(others)
			s.others.Store(&others)
		} else if ctx.Err() == nil {
			s.log.Debug("cannot read the other members' boot URLs; scripts keep the last ones", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(othersEvery):
		}
	}
}

// otherMembers returns the other members' boot URLs as last read.
func (s *Server) otherMembers() []string {
	if p := s.others.Load(); p != nil {
		return *p
	}
	return nil
}

// generic serves /boot.ipxe.
func (s *Server) generic(w http.ResponseWriter, r *http.Request) {
	writeScript(w, s.cfg.GenericWith(s.otherMembers()))
}

// byMAC serves /boot?mac=MAC[&token=TOKEN][&platform=PLATFORM].
func (s *Server) byMAC(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	mac, err := api.NormalizeMAC("mac", q.Get("mac"))
	if err != nil {
		http.Error(w, err.Error()+"; the URL is /boot?mac=MAC", http.StatusBadRequest)
		return
	}
	token, ok := s.token(w, q.Get("token"))
	if !ok {
		return
	}
	platform, ok := s.platform(w, q.Get("platform"))
	if !ok {
		return
	}
	self := WithPlatform(s.cfg.MACPath(mac, token), platform)
	if !s.cache.ready() {
		s.wait(w, r, WaitPlan("the boot server is starting"), self, "")
		return
	}
	refs := s.cache.byMACAddr(mac)
	switch len(refs) {
	case 0:
		s.wait(w, r, WaitPlan(fmt.Sprintf("no node has MAC %s; add it to the spec.macs of a node (sanbootctl provision NODE --mac %s)", mac, mac)), self, mac)
	case 1:
		s.serveNode(w, r, refs[0], token, self)
	default:
		names := make([]string, len(refs))
		for i, ref := range refs {
			names[i] = ref.String()
		}
		s.wait(w, r, WaitPlan(fmt.Sprintf("MAC %s is in the spec.macs of several nodes (%s); keep it in one", mac, strings.Join(names, ", "))), self, mac)
	}
}

// byName serves /boot/PROJECT/NODE[?token=TOKEN][&platform=PLATFORM].
func (s *Server) byName(w http.ResponseWriter, r *http.Request) {
	ref := state.Ref{Project: r.PathValue("project"), Name: r.PathValue("node")}
	if err := errors.Join(api.ValidateName("project", ref.Project), api.ValidateName("node", ref.Name)); err != nil {
		http.Error(w, err.Error()+"; the URL is /boot/PROJECT/NODE", http.StatusBadRequest)
		return
	}
	token, ok := s.token(w, r.URL.Query().Get("token"))
	if !ok {
		return
	}
	platform, ok := s.platform(w, r.URL.Query().Get("platform"))
	if !ok {
		return
	}
	self := WithPlatform(s.cfg.NodePath(ref, token), platform)
	if !s.cache.ready() {
		s.wait(w, r, WaitPlan("the boot server is starting"), self, ref.String())
		return
	}
	s.serveNode(w, r, ref, token, self)
}

// token checks the form of a token from a URL.
func (s *Server) token(w http.ResponseWriter, token string) (string, bool) {
	if token == "" || validTokenForm(token) {
		return token, true
	}
	http.Error(w, "token: not a sanboot boot token", http.StatusBadRequest)
	return "", false
}

// platform checks the firmware a node named in a URL (iPXE's ${platform}).
func (s *Server) platform(w http.ResponseWriter, platform string) (string, bool) {
	if err := ValidatePlatform(platform); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", false
	}
	return platform, true
}

// serveNode serves node ref's script, fetched as self, and records the
// fetch (recordFetch).
func (s *Server) serveNode(w http.ResponseWriter, r *http.Request, ref state.Ref, token, self string) {
	n, image, secret := s.cache.node(ref)
	if n == nil {
		s.wait(w, r, WaitPlan(fmt.Sprintf("there is no node %s; provision it", ref)), self, ref.String())
		return
	}
	fetch := &sanbootv1.BootFetch{NodeUid: n.GetMetadata().GetUid(), Time: timestamppb.Now(), RemoteAddr: r.RemoteAddr,
		Platform: r.URL.Query().Get("platform"), Token: token != "", Outcome: FetchWait}
	defer func() {
		// The node has its whole script (writeScript sets its length)
		// before the record is written: a slow etcd does not slow a boot.
		_ = http.NewResponseController(w).Flush()
		s.recordFetch(r.Context(), ref, fetch)
	}()
	wait := func(p Plan) {
		fetch.Message = p.Reason()
		s.wait(w, r, p, self, ref.String())
	}
	var tokenRev int64
	if s.cfg.Tokens {
		if token == "" {
			wait(WaitPlan(fmt.Sprintf("node %s: this boot server serves scripts only to URLs with a one-time boot token; get the URL of the node with: sanbootctl boot-script %s --url", ref, ref.Name)))
			return
		}
		rev, err := checkToken(r.Context(), s.cli, ref, n.GetMetadata().GetUid(), token)
		if err != nil {
			self = s.retryURL(self, err)
			wait(s.tokenFailed(ref, err))
			return
		}
		tokenRev = rev
	}
	plan := PlanNode(n, image, secret).WithFailover(s.cache.failover(n))
	if !plan.Ready() {
		wait(plan)
		return
	}
	if s.cfg.Tokens {
		if err := consumeToken(r.Context(), s.cli, ref, tokenRev); err != nil {
			self = s.retryURL(self, err)
			wait(s.tokenFailed(ref, err))
			return
		}
	}
	chap := secret != nil && n.GetSpec().GetChap()
	if chap && !s.cfg.Tokens {
		s.log.Warn("CHAP credentials served without a boot token", "node", ref, "remote", r.RemoteAddr)
	}
	s.log.Info("boot script served: node boots", "node", ref, "remote", r.RemoteAddr, "platform", fetch.Platform, "chap", chap)
	fetch.Outcome = FetchBoot
	writeScript(w, s.cfg.RenderWith(plan, self, s.otherMembers()))
}

// The outcomes of a BootFetch.
const (
	FetchBoot = "boot" // the script sanboots the node's disk
	FetchWait = "wait" // the script waits and fetches itself again
)

// recordFetch writes fetch as the node's last boot-script fetch, for
// `sanbootctl describe node`. Last writer wins: it is an observation, not
// state anyone acts on. A failure only costs the record, so it is logged
// and the script is served all the same.
func (s *Server) recordFetch(ctx context.Context, ref state.Ref, fetch *sanbootv1.BootFetch) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	put, err := kv.PutOp(api.BootFetchKey(ref.Project, ref.Name), fetch)
	if err == nil {
		_, err = s.cli.Do(ctx, put)
	}
	if err != nil {
		s.log.Warn("could not record the boot-script fetch", "node", ref, "err", err)
	}
}

// tokenFailed is the plan for a node whose token check failed with err.
func (s *Server) tokenFailed(ref state.Ref, err error) Plan {
	if errors.Is(err, ErrBadToken) {
		return WaitPlan(fmt.Sprintf("node %s: %v", ref, err))
	}
	s.log.Warn("boot token check failed", "node", ref, "err", err)
	return WaitPlan(fmt.Sprintf("node %s: the boot server cannot reach etcd to check the boot token", ref))
}

// retryURL is the URL a node whose token check failed with err fetches
// again: self, less a token that can never become valid (used, expired,
// replaced), which the script would otherwise repeat to whoever reads it.
func (s *Server) retryURL(self string, err error) string {
	if !errors.Is(err, ErrBadToken) {
		return self // etcd could not be asked: the same token may do next time
	}
	u, perr := url.Parse(self)
	if perr != nil {
		return self
	}
	q := u.Query()
	q.Del("token")
	u.RawQuery = q.Encode()
	return u.String()
}

// wait serves a script that waits; who names the node or MAC in the log.
func (s *Server) wait(w http.ResponseWriter, r *http.Request, p Plan, self, who string) {
	s.log.Info("boot script served: node waits", "for", who, "remote", r.RemoteAddr, "reason", p.Reason())
	writeScript(w, s.cfg.RenderWith(p, self, s.otherMembers()))
}

func writeScript(w http.ResponseWriter, script string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(script)))
	_, _ = w.Write([]byte(script))
}

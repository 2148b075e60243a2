package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
	"github.com/sanboot/sanboot/controlplane/state"
)

// Config configures a Server.
type Config struct {
	Settings
	Log *slog.Logger
}

// Server serves boot scripts over HTTP from a cache of etcd's records.
// Create it with NewServer and call Run.
type Server struct {
	cli   *clientv3.Client
	cfg   Config
	log   *slog.Logger
	cache *cache
	mux   *http.ServeMux
}

// NewServer returns a boot server over cli.
func NewServer(cli *clientv3.Client, cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	log := cfg.Log.With("component", "boot")
	s := &Server{cli: cli, cfg: cfg, log: log, cache: newCache(cli, log)}
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
	wg.Go(func() { s.cache.run(ctx) })
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

// generic serves /boot.ipxe.
func (s *Server) generic(w http.ResponseWriter, r *http.Request) {
	writeScript(w, s.cfg.Generic())
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

// serveNode serves node ref's script, fetched as self.
func (s *Server) serveNode(w http.ResponseWriter, r *http.Request, ref state.Ref, token, self string) {
	n, secret := s.cache.node(ref)
	if n == nil {
		s.wait(w, r, WaitPlan(fmt.Sprintf("there is no node %s; provision it", ref)), self, ref.String())
		return
	}
	var tokenRev int64
	if s.cfg.Tokens {
		if token == "" {
			s.wait(w, r, WaitPlan(fmt.Sprintf("node %s: this boot server serves scripts only to URLs with a one-time boot token; get the URL of the node with: sanbootctl boot-script %s --url", ref, ref.Name)), self, ref.String())
			return
		}
		rev, err := checkToken(r.Context(), s.cli, ref, n.GetMetadata().GetUid(), token)
		if err != nil {
			s.tokenFailed(w, r, ref, self, err)
			return
		}
		tokenRev = rev
	}
	plan := PlanNode(n, secret)
	if !plan.Ready() {
		s.wait(w, r, plan, self, ref.String())
		return
	}
	if s.cfg.Tokens {
		if err := consumeToken(r.Context(), s.cli, ref, tokenRev); err != nil {
			s.tokenFailed(w, r, ref, self, err)
			return
		}
	}
	chap := secret != nil && n.GetSpec().GetChap()
	if chap && !s.cfg.Tokens {
		s.log.Warn("CHAP credentials served without a boot token", "node", ref, "remote", r.RemoteAddr)
	}
	s.log.Info("boot script served: node boots", "node", ref, "remote", r.RemoteAddr, "platform", r.URL.Query().Get("platform"), "chap", chap)
	writeScript(w, s.cfg.Render(plan, self))
}

func (s *Server) tokenFailed(w http.ResponseWriter, r *http.Request, ref state.Ref, self string, err error) {
	if errors.Is(err, ErrBadToken) {
		s.wait(w, r, WaitPlan(fmt.Sprintf("node %s: %v", ref, err)), self, ref.String())
		return
	}
	s.log.Warn("boot token check failed", "node", ref, "err", err)
	s.wait(w, r, WaitPlan(fmt.Sprintf("node %s: the boot server cannot reach etcd to check the boot token", ref)), self, ref.String())
}

// wait serves a script that waits; who names the node or MAC in the log.
func (s *Server) wait(w http.ResponseWriter, r *http.Request, p Plan, self, who string) {
	s.log.Info("boot script served: node waits", "for", who, "remote", r.RemoteAddr, "reason", p.Reason())
	writeScript(w, s.cfg.Render(p, self))
}

func writeScript(w http.ResponseWriter, script string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write([]byte(script))
}

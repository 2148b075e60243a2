package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/client"
	"github.com/sanboot/sanboot/ctl/config"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

// session holds the global flags and, once a command needs them, the
// resolved settings and the API connection. Commands that never talk to the
// API (help, completion) never read the config file.
type session struct {
	env   Env
	flags struct {
		endpoints   string
		project     string
		configPath  string
		callTimeout time.Duration
		// cert, key, cacert: mutual TLS (etcdctl's flag names).
		cert, key, cacert string
	}
	settings *config.Settings
	client   *client.Client
}

func (s *session) resolve() (config.Settings, error) {
	if s.settings != nil {
		return *s.settings, nil
	}
	st, err := config.Resolve(config.Input{
		Endpoints:  s.flags.endpoints,
		Project:    s.flags.project,
		ConfigPath: s.flags.configPath,
		TLS:        tlsconfig.Files{CertFile: s.flags.cert, KeyFile: s.flags.key, TrustedCAFile: s.flags.cacert},
		Getenv:     s.env.Getenv,
	})
	if err != nil {
		var fe *config.FlagError
		if errors.As(err, &fe) {
			return config.Settings{}, withCode(ExitUsage, err)
		}
		return config.Settings{}, err
	}
	s.settings = &st
	return st, nil
}

// project returns the project commands work in.
func (s *session) project() (string, error) {
	st, err := s.resolve()
	return st.Project, err
}

// api returns the connection to the API, creating it on first use.
func (s *session) api() (sanbootv1.SanbootClient, error) {
	if s.client != nil {
		return s.client, nil
	}
	st, err := s.resolve()
	if err != nil {
		return nil, err
	}
	opts := client.Options{Endpoints: st.Endpoints, CallTimeout: s.flags.callTimeout, Discover: true, CacheDir: s.cacheDir(),
		// A member without an etcd leader is left for another: say so,
		// as it is cut off (or quorum is at risk).
		OnFailover: func(endpoint string, err error) {
			fmt.Fprintf(s.env.Stderr, "leaving %s: %s; trying the next member\n", endpoint, status.Convert(err).Message())
		}}
	if st.TLS.Enabled() {
		if opts.TLS, err = st.TLS.Client(); err != nil {
			return nil, err
		}
	}
	c, err := client.New(opts)
	if err != nil {
		return nil, err
	}
	s.client = c
	return c, nil
}

// cacheDir is where sanbootctl keeps the members it learned:
// $XDG_CACHE_HOME/sanboot, else $HOME/.cache/sanboot; none without either.
func (s *session) cacheDir() string {
	if x := s.env.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "sanboot")
	}
	if h := s.env.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".cache", "sanboot")
	}
	return ""
}

// apiAndProject is api and project, for the commands that work on one
// project's objects.
func (s *session) apiAndProject() (sanbootv1.SanbootClient, string, error) {
	c, err := s.api()
	if err != nil {
		return nil, "", err
	}
	project, err := s.project()
	return c, project, err
}

// where describes the endpoints for error messages.
func (s *session) where() string {
	if s.settings == nil {
		return "the sanboot API"
	}
	return "the sanboot API at " + strings.Join(s.settings.Endpoints, ",") + " (from " + s.settings.EndpointsFrom + ")"
}

func (s *session) close() {
	if s.client != nil {
		_ = s.client.Close()
	}
}

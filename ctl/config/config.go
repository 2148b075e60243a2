// Package config decides where sanbootctl finds the sanboot API and which
// project it works in.
//
// Each setting comes from the first of these that sets it:
//
//  1. a command-line flag (--endpoints, --project);
//  2. an environment variable (SANBOOT_ENDPOINTS, SANBOOT_PROJECT);
//  3. the config file (--config, else $XDG_CONFIG_HOME/sanboot/config.yaml,
//     else ~/.config/sanboot/config.yaml);
//  4. for the project, a user's certificate that names exactly one;
//  5. the defaults: endpoint 127.0.0.1:7443, project "default".
//
// The config file is YAML:
//
//	endpoints: [10.0.0.1:7443, 10.0.0.2:7443]
//	project: lab
//	cert: alice.crt      # mutual TLS (sanbootctl pki issue user); relative
//	key: alice.key       # paths are relative to the config file
//	cacert: ca.crt
//
// --cert, --key and --cacert (etcdctl's names) override the file's three
// together.
//
// An unknown key is an error that names the file and line, so that a typo
// never silently falls back to a default.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/sanboot/sanboot/ctl/client"
	"github.com/sanboot/sanboot/internal/pki"
	"github.com/sanboot/sanboot/internal/tlsconfig"
)

// Environment variables sanbootctl reads.
const (
	EnvEndpoints = "SANBOOT_ENDPOINTS"
	EnvProject   = "SANBOOT_PROJECT"
)

// DefaultProject is the project used when nothing names one.
const DefaultProject = "default"

// File is the content of the config file. Every key is optional.
type File struct {
	// Endpoints are host:port addresses of control-plane API servers.
	Endpoints []string `yaml:"endpoints"`
	// Project is the project commands work in unless --project says otherwise.
	Project string `yaml:"project"`
	// Cert, Key and CACert: the user's certificate, its key and the CA
	// the API's certificate must be signed by (all three or none).
	Cert   string `yaml:"cert"`
	Key    string `yaml:"key"`
	CACert string `yaml:"cacert"`
}

// DefaultPath returns the config file used when --config is not given:
// $XDG_CONFIG_HOME/sanboot/config.yaml, else $HOME/.config/sanboot/config.yaml.
// It returns "" when neither variable is set.
func DefaultPath(getenv func(string) string) string {
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "sanboot", "config.yaml")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "sanboot", "config.yaml")
	}
	return ""
}

// Load reads and checks the config file at path. A missing file yields an
// empty File and found=false; every other problem is an error naming the
// file (and the line, when the YAML is at fault).
func Load(path string) (f File, found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return File{}, false, nil
	}
	if err != nil {
		return File{}, false, fmt.Errorf("read config file: %w", err)
	}
	if err := yaml.UnmarshalWithOptions(data, &f, yaml.DisallowUnknownField()); err != nil {
		return File{}, true, yamlError(path, err)
	}
	for i, e := range f.Endpoints {
		if err := ValidateEndpoint(e); err != nil {
			return File{}, true, fmt.Errorf("%s: endpoints[%d]: %w", path, i, err)
		}
	}
	return f, true, nil
}

// yamlError turns a go-yaml error into "path:line: message" and says which
// keys are allowed when the key was unknown.
func yamlError(path string, err error) error {
	var ye yaml.Error
	if !errors.As(err, &ye) || ye.GetToken() == nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	msg := ye.GetMessage()
	var unknown *yaml.UnknownFieldError
	if errors.As(err, &unknown) {
		msg += " (allowed keys: endpoints, project, cert, key, cacert)"
	}
	return fmt.Errorf("%s:%d: %s", path, ye.GetToken().Position.Line, msg)
}

// Input is what the command line and the environment say.
type Input struct {
	// Endpoints is the raw --endpoints value ("" when not given).
	Endpoints string
	// Project is the --project value ("" when not given).
	Project string
	// TLS is --cert, --key and --cacert (empty when not given).
	TLS tlsconfig.Files
	// ConfigPath is the --config value ("" means DefaultPath).
	ConfigPath string
	// Getenv reads the environment.
	Getenv func(string) string
}

// Settings is the outcome of Resolve.
type Settings struct {
	Endpoints []string
	// EndpointsFrom says where Endpoints came from ("--endpoints",
	// "SANBOOT_ENDPOINTS", the config file's path, or "default"), for
	// error messages.
	EndpointsFrom string
	Project       string
	// ProjectFrom says where Project came from, like EndpointsFrom.
	ProjectFrom string
	// TLS is the client certificate, key and CA (none: plaintext), and
	// TLSFrom where they came from.
	TLS     tlsconfig.Files
	TLSFrom string
	// ConfigFile is the config file consulted ("" when none could be
	// named), and ConfigFound whether it existed.
	ConfigFile  string
	ConfigFound bool
}

// Resolve applies the precedence flag > environment > config file > default.
// A bad --endpoints value is a *FlagError.
func Resolve(in Input) (Settings, error) {
	getenv := in.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	path, explicit := in.ConfigPath, in.ConfigPath != ""
	if !explicit {
		path = DefaultPath(getenv)
	}
	var file File
	var s Settings
	s.ConfigFile = path
	if path != "" {
		f, found, err := Load(path)
		if err != nil {
			return Settings{}, err
		}
		if explicit && !found {
			return Settings{}, fmt.Errorf("config file %s does not exist: create it or drop --config", path)
		}
		file, s.ConfigFound = f, found
	}

	switch {
	case in.Endpoints != "":
		eps, err := ParseEndpoints(in.Endpoints)
		if err != nil {
			return Settings{}, &FlagError{Flag: "--endpoints", Err: err}
		}
		s.Endpoints, s.EndpointsFrom = eps, "--endpoints"
	case getenv(EnvEndpoints) != "":
		eps, err := ParseEndpoints(getenv(EnvEndpoints))
		if err != nil {
			return Settings{}, fmt.Errorf("environment variable %s: %w", EnvEndpoints, err)
		}
		s.Endpoints, s.EndpointsFrom = eps, EnvEndpoints
	case len(file.Endpoints) > 0:
		s.Endpoints, s.EndpointsFrom = file.Endpoints, path
	default:
		s.Endpoints, s.EndpointsFrom = []string{client.DefaultEndpoint}, "default"
	}

	switch {
	case in.TLS.Enabled():
		if err := in.TLS.Check(tlsconfig.ClientNames); err != nil {
			return Settings{}, &FlagError{Flag: "--cert", Err: err}
		}
		s.TLS, s.TLSFrom = in.TLS, "--cert"
	case file.Cert != "" || file.Key != "" || file.CACert != "":
		rel := func(p string) string {
			if p == "" || filepath.IsAbs(p) {
				return p
			}
			return filepath.Join(filepath.Dir(path), p)
		}
		s.TLS, s.TLSFrom = tlsconfig.Files{CertFile: rel(file.Cert), KeyFile: rel(file.Key), TrustedCAFile: rel(file.CACert)}, path
		if err := s.TLS.Check(tlsconfig.Names{Cert: "cert", Key: "key", CA: "cacert"}); err != nil {
			return Settings{}, fmt.Errorf("%s: %w", path, err)
		}
	}

	switch {
	case in.Project != "":
		s.Project, s.ProjectFrom = in.Project, "--project"
	case getenv(EnvProject) != "":
		s.Project, s.ProjectFrom = getenv(EnvProject), EnvProject
	case file.Project != "":
		s.Project, s.ProjectFrom = file.Project, path
	case certProject(s.TLS) != "":
		s.Project, s.ProjectFrom = certProject(s.TLS), s.TLS.CertFile
	default:
		s.Project, s.ProjectFrom = DefaultProject, "default"
	}
	return s, nil
}

// certProject is the project of a user's certificate that names exactly
// one: the natural default for its holder.
func certProject(f tlsconfig.Files) string {
	if f.CertFile == "" {
		return ""
	}
	c, err := pki.ReadCert(f.CertFile)
	if err != nil {
		return ""
	}
	id, err := pki.IdentityOf(c)
	if err != nil || id.Role != pki.RoleUser || len(id.Projects) != 1 {
		return ""
	}
	return id.Projects[0]
}

// FlagError is a bad flag value (a usage error, unlike a bad config file).
type FlagError struct {
	Flag string
	Err  error
}

func (e *FlagError) Error() string { return e.Flag + ": " + e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// ParseEndpoints splits a comma-separated list of host:port endpoints.
func ParseEndpoints(s string) ([]string, error) {
	var eps []string
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if err := ValidateEndpoint(e); err != nil {
			return nil, err
		}
		eps = append(eps, e)
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("%q names no endpoint: use host:port[,host:port...]", s)
	}
	return eps, nil
}

// ValidateEndpoint checks one host:port endpoint.
func ValidateEndpoint(e string) error {
	host, port, err := net.SplitHostPort(e)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port (e.g. 10.0.0.1:7443 or [::1]:7443)", e)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%q has no valid port: use a number from 1 to 65535", e)
	}
	return nil
}

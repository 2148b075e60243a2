package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sanboot/sanboot/ctl/client"
	"github.com/sanboot/sanboot/ctl/config"
)

// Env is what the commands use from the world outside them.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads an environment variable (os.Getenv in the binary).
	Getenv func(string) string
	// Now is the clock that ages are computed against (time.Now in the binary).
	Now func() time.Time
	// Stdin is what "image import NAME -" reads (os.Stdin in the binary;
	// nil: empty).
	Stdin io.Reader
	// Terminal reports whether w (Stdout or Stderr) is a terminal:
	// progress bars are drawn only on one. Nil: never.
	Terminal func(w io.Writer) bool
}

func (e Env) withDefaults() Env {
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.Getenv == nil {
		e.Getenv = func(string) string { return "" }
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Stdin == nil {
		e.Stdin = strings.NewReader("")
	}
	return e
}

// Default timeouts.
const (
	defaultCallTimeout = 30 * time.Second
	defaultWaitTimeout = 5 * time.Minute
)

// Run executes sanbootctl with args (without the program name), prints any
// error to env.Stderr as "error: ..." and returns the exit code.
func Run(ctx context.Context, env Env, args []string) int {
	env = env.withDefaults()
	root, s := newRoot(env)
	defer s.close()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	code := ExitUsage // errors that did not come from a RunE come from cobra's parsing
	var re *runError
	if errors.As(err, &re) {
		code = exitCode(re.err)
		err = re.err
	}
	var fixed *fixedExit
	if errors.As(err, &fixed) { // diff: its own exit codes, no usage hint
		if fixed.err != nil {
			fmt.Fprintf(env.Stderr, "error: %s\n", fixed.err)
		}
		return fixed.code
	}
	fmt.Fprintf(env.Stderr, "error: %s\n", err)
	if code == ExitUsage && cmd != nil {
		fmt.Fprintf(env.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// NewRoot builds the command tree. Run is the usual way in; NewRoot is for
// tools that want the tree itself (documentation, completion scripts).
func NewRoot(env Env) *cobra.Command {
	root, _ := newRoot(env.withDefaults())
	return root
}

func newRoot(env Env) (*cobra.Command, *session) {
	s := &session{env: env}
	root := &cobra.Command{
		Use:   "sanbootctl",
		Short: "Provision bare-metal nodes that boot from iSCSI clones of disk images",
		Long: `sanbootctl talks to the sanboot control plane: it declares which node runs
which image, waits for the agents to serve the node's disk, and shows nodes,
images and agents.

Reaching the API (first that is set wins):
  --endpoints host:port,...   then SANBOOT_ENDPOINTS, then "endpoints:" in the
                              config file, then ` + client.DefaultEndpoint + `
  --project/-p NAME           then SANBOOT_PROJECT, then "project:" in the config
                              file, then the one project of a user's --cert,
                              then "` + config.DefaultProject + `"
  --cert, --key, --cacert      mutual TLS; then "cert:", "key:", "cacert:" in
                              the config file; none: plaintext (loopback only)
The config file is --config, else ~/.config/sanboot/config.yaml:
  endpoints: [10.0.0.1:7443, 10.0.0.2:7443]
  project: lab
  cert: alice.crt
  key: alice.key
  cacert: ca.crt

` + exitCodesHelp,
		Example: `  # Boot node-01 from image debian-13 and wait until its disk is served
  sanbootctl provision node-01 --image debian-13 --mac 52:54:00:12:34:56 --wait

  # List nodes in every project
  sanbootctl get nodes -A

  # Talk to a three-member control plane
  sanbootctl --endpoints 10.0.0.1:7443,10.0.0.2:7443,10.0.0.3:7443 get agents`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&s.flags.endpoints, "endpoints", "", "API endpoints, host:port[,host:port...] (default: $"+config.EnvEndpoints+", the config file, or "+client.DefaultEndpoint+")")
	pf.StringVarP(&s.flags.project, "project", "p", "", "project to work in (default: $"+config.EnvProject+", the config file, or \""+config.DefaultProject+"\")")
	pf.StringVar(&s.flags.configPath, "config", "", "config file (default ~/.config/sanboot/config.yaml)")
	pf.DurationVar(&s.flags.callTimeout, "timeout", defaultCallTimeout, "deadline of each API call")
	pf.StringVar(&s.flags.cert, "cert", "", "your certificate for mutual TLS (sanbootctl pki issue user; default: cert: in the config file)")
	pf.StringVar(&s.flags.key, "key", "", "private key of --cert")
	pf.StringVar(&s.flags.cacert, "cacert", "", "CA the API's certificate must be signed by")

	root.AddCommand(
		newProvisionCmd(s),
		newDeprovisionCmd(s),
		newGetCmd(s),
		newWaitCmd(s),
		newImageCmd(s),
		newAgentsCmd(s),
		newSnapshotCmd(s),
		newBootScriptCmd(s),
		newApplyCmd(s),
		newDiffCmd(s),
		newDeleteCmd(s),
		newDescribeCmd(s),
		newConfigCmd(s),
		newBackupCmd(s),
		newPKICmd(s),
		newMemberCmd(s),
	)
	markRunErrors(root)
	return root, s
}

// runError marks an error returned by a command's RunE, as opposed to one
// from cobra's parsing of the command line (a usage error).
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// markRunErrors wraps the RunE of c and its descendants so that Run can
// tell their errors from usage errors.
func markRunErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := run(cmd, args); err != nil {
				return &runError{err: err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}

// usageErrorf returns a usage error (exit code 2) from inside a RunE.
func usageErrorf(format string, a ...any) error {
	return withCode(ExitUsage, fmt.Errorf(format, a...))
}

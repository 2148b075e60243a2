package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/sanboot/sanboot/ctl/printers"
	"github.com/spf13/cobra"
)

func newConfigCmd(s *session) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show sanbootctl's settings",
		Example: `  sanbootctl config view
  SANBOOT_PROJECT=lab sanbootctl config view -o json`,
	}
	o := &configViewOptions{}
	view := &cobra.Command{
		Use:   "view",
		Short: "Show the settings in effect and where each came from",
		Long: `Show the settings sanbootctl uses: the API endpoints and the project, each
with where it came from (first that is set wins: flag, environment
variable, config file, default), and the config file consulted.`,
		Example: `  sanbootctl config view
  sanbootctl --config ./lab.yaml config view -o json`,
		Args: noArgs("config view takes no arguments"),
		RunE: runOptions(s, o),
	}
	view.Flags().StringVarP(&o.output, "output", "o", printers.FormatYAML, "output format: yaml or json")
	cmd.AddCommand(view)
	return cmd
}

// configViewOptions are config view's (options.go).
type configViewOptions struct{ output string } // -o

func (o *configViewOptions) complete([]string) error { return nil }

func (o *configViewOptions) validate() error {
	if o.output != printers.FormatYAML && o.output != printers.FormatJSON {
		return usageErrorf("-o %q: use yaml or json", o.output)
	}
	return nil
}

// run prints the settings in effect and where each came from.
func (o *configViewOptions) run(_ context.Context, s *session) error {
	st, err := s.resolve()
	if err != nil {
		return err
	}
	v := struct {
		ConfigFile      string   `json:"configFile"`
		ConfigFileFound bool     `json:"configFileFound"`
		Endpoints       []string `json:"endpoints"`
		EndpointsFrom   string   `json:"endpointsFrom"`
		Project         string   `json:"project"`
		ProjectFrom     string   `json:"projectFrom"`
		Cert            string   `json:"cert,omitempty"`
		Key             string   `json:"key,omitempty"`
		CACert          string   `json:"cacert,omitempty"`
		TLSFrom         string   `json:"tlsFrom,omitempty"`
	}{st.ConfigFile, st.ConfigFound, st.Endpoints, st.EndpointsFrom, st.Project, st.ProjectFrom,
		st.TLS.CertFile, st.TLS.KeyFile, st.TLS.TrustedCAFile, st.TLSFrom}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if o.output == printers.FormatYAML {
		y, err := printers.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = s.env.Stdout.Write(y)
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	fmt.Fprintln(s.env.Stdout, out.String())
	return nil
}

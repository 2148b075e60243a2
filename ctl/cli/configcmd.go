package cli

import (
	"bytes"
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
	var output string
	view := &cobra.Command{
		Use:   "view",
		Short: "Show the settings in effect and where each came from",
		Long: `Show the settings sanbootctl uses: the API endpoints and the project, each
with where it came from (first that is set wins: flag, environment
variable, config file, default), and the config file consulted.`,
		Example: `  sanbootctl config view
  sanbootctl --config ./lab.yaml config view -o json`,
		Args: noArgs("config view takes no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != printers.FormatYAML && output != printers.FormatJSON {
				return usageErrorf("-o %q: use yaml or json", output)
			}
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
			if output == printers.FormatYAML {
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
		},
	}
	view.Flags().StringVarP(&output, "output", "o", printers.FormatYAML, "output format: yaml or json")
	cmd.AddCommand(view)
	return cmd
}

package cli

import (
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/sanboot/sanboot/internal/pki"
)

// newPKICmd: sanbootctl pki init|issue|show. It works on local files only
// and never talks to the API.
func newPKICmd(s *session) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Make the certificate authority and the certificates of members, agents and users",
		Long: `pki makes sanboot's certificates with no other tool: a CA, then one
certificate per control-plane member, agent and user. Keys are written 0600
and never printed. Identity is in the certificate's subject: CN is the name,
OU the role (member, agent, user or admin), O the user's projects.`,
		Example: `  sanbootctl pki init /etc/sanboot/pki
  sanbootctl pki issue member cp1 --dir /etc/sanboot/pki --ip 10.0.0.1 --dns cp1.lab
  sanbootctl pki issue agent storage-1 --dir /etc/sanboot/pki
  sanbootctl pki issue user alice --project lab --dir /etc/sanboot/pki
  sanbootctl pki issue user root --admin --dir /etc/sanboot/pki
  sanbootctl pki show /etc/sanboot/pki/member-cp1.crt`,
	}
	var validity time.Duration
	var caName string
	initCmd := &cobra.Command{
		Use:     "init DIR",
		Short:   "Make a new certificate authority in DIR (ca.crt, ca.key)",
		Example: `  sanbootctl pki init /etc/sanboot/pki`,
		Args:    exactArgs(1, "pki init takes the directory of the CA"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ca, err := pki.Init(args[0], caName, validity, s.env.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(s.env.Stdout, "CA written to %s and %s (keep the key private), valid until %s\n",
				filepath.Join(args[0], pki.CACertFile), filepath.Join(args[0], pki.CAKeyFile), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	initCmd.Flags().StringVar(&caName, "name", "sanboot CA", "the CA's common name")
	initCmd.Flags().DurationVar(&validity, "valid-for", pki.DefaultCAValidity, "how long the CA is valid")

	issue := &cobra.Command{
		Use:     "issue member|agent|user NAME",
		Short:   "Issue a certificate signed by the CA",
		Example: `  sanbootctl pki issue agent storage-1 --dir /etc/sanboot/pki`,
	}
	var (
		dir, outDir string
		ips         []net.IP
		dns         []string
		projects    []string
		admin       bool
		certValid   time.Duration
	)
	issueOne := func(kind string, role pki.Role) *cobra.Command {
		c := &cobra.Command{
			Use:   kind + " NAME",
			Short: "Issue the certificate of a " + kind,
			Example: map[string]string{
				"member": "  sanbootctl pki issue member cp1 --dir /etc/sanboot/pki --ip 10.0.0.1 --dns cp1.lab",
				"agent":  "  sanbootctl pki issue agent storage-1 --dir /etc/sanboot/pki",
				"user": "  sanbootctl pki issue user alice --project lab --dir /etc/sanboot/pki\n" +
					"  sanbootctl pki issue user root --admin --dir /etc/sanboot/pki",
			}[kind],
			Args: exactArgs(1, "pki issue "+kind+" takes the "+kind+"'s name"),
			RunE: func(cmd *cobra.Command, args []string) error {
				ca, err := pki.Load(dir)
				if err != nil {
					return err
				}
				r := role
				if kind == "user" && admin {
					r = pki.RoleAdmin
				}
				out := outDir
				if out == "" {
					out = dir
				}
				base := filepath.Join(out, kind+"-"+args[0])
				req := pki.Request{Identity: pki.Identity{Name: args[0], Role: r, Projects: projects}, IPs: ips, DNS: dns, Validity: certValid}
				cert, err := ca.Issue(req, base+".crt", base+".key", s.env.Now())
				if err != nil {
					return withCode(ExitUsage, err)
				}
				fmt.Fprintf(s.env.Stdout, "%s.crt and %s.key written (%s %s, valid until %s)\n",
					base, base, r, args[0], cert.NotAfter.UTC().Format(time.RFC3339))
				return nil
			},
		}
		f := c.Flags()
		f.StringVar(&dir, "dir", ".", "directory of the CA (pki init)")
		f.StringVar(&outDir, "out-dir", "", "where to write KIND-NAME.crt and KIND-NAME.key (default: --dir)")
		f.DurationVar(&certValid, "valid-for", pki.DefaultCertValidity, "how long the certificate is valid")
		switch kind {
		case "member":
			f.IPSliceVar(&ips, "ip", nil, "IP address clients and peers reach the member at (repeatable; loopback is always included)")
			f.StringSliceVar(&dns, "dns", nil, "DNS name clients and peers reach the member at (repeatable; localhost is always included)")
		case "user":
			f.StringSliceVar(&projects, "project", nil, "project the user may see and change (repeatable)")
			f.BoolVar(&admin, "admin", false, "an administrator: every project and the cluster-wide objects (agents, members)")
		}
		return c
	}
	issue.AddCommand(issueOne("member", pki.RoleMember), issueOne("agent", pki.RoleAgent), issueOne("user", pki.RoleUser))

	show := &cobra.Command{
		Use:     "show FILE",
		Short:   "Print a certificate's subject, identity, SANs and validity",
		Example: `  sanbootctl pki show /etc/sanboot/pki/agent-storage-1.crt`,
		Args:    exactArgs(1, "pki show takes a certificate file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := pki.ReadCert(args[0])
			if err != nil {
				return err
			}
			fmt.Fprint(s.env.Stdout, pki.Describe(c, s.env.Now()))
			return nil
		},
	}
	cmd.AddCommand(initCmd, issue, show)
	return cmd
}

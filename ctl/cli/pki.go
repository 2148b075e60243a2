package cli

import (
	"context"
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
	cmd.AddCommand(newPKIInitCmd(s), newPKIIssueCmd(s), newPKIShowCmd(s))
	return cmd
}

func newPKIInitCmd(s *session) *cobra.Command {
	o := &pkiInitOptions{}
	cmd := &cobra.Command{
		Use:     "init DIR",
		Short:   "Make a new certificate authority in DIR (ca.crt, ca.key)",
		Example: `  sanbootctl pki init /etc/sanboot/pki`,
		Args:    exactArgs(1, "pki init takes the directory of the CA"),
		RunE:    runOptions(s, o),
	}
	cmd.Flags().StringVar(&o.caName, "name", "sanboot CA", "the CA's common name")
	cmd.Flags().DurationVar(&o.validity, "valid-for", pki.DefaultCAValidity, "how long the CA is valid")
	return cmd
}

// pkiInitOptions are pki init's (options.go).
type pkiInitOptions struct {
	dir      string
	caName   string        // --name
	validity time.Duration // --valid-for
}

func (o *pkiInitOptions) complete(args []string) error {
	o.dir = args[0]
	return nil
}

func (o *pkiInitOptions) validate() error { return nil }

func (o *pkiInitOptions) run(_ context.Context, s *session) error {
	ca, err := pki.Init(o.dir, o.caName, o.validity, s.env.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(s.env.Stdout, "CA written to %s and %s (keep the key private), valid until %s\n",
		filepath.Join(o.dir, pki.CACertFile), filepath.Join(o.dir, pki.CAKeyFile), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func newPKIIssueCmd(s *session) *cobra.Command {
	issue := &cobra.Command{
		Use:     "issue member|agent|user NAME",
		Short:   "Issue a certificate signed by the CA",
		Example: `  sanbootctl pki issue agent storage-1 --dir /etc/sanboot/pki`,
	}
	issue.AddCommand(newPKIIssueKindCmd(s, "member", pki.RoleMember), newPKIIssueKindCmd(s, "agent", pki.RoleAgent), newPKIIssueKindCmd(s, "user", pki.RoleUser))
	return issue
}

// newPKIIssueKindCmd is pki issue member|agent|user.
func newPKIIssueKindCmd(s *session, kind string, role pki.Role) *cobra.Command {
	o := &pkiIssueOptions{kind: kind, role: role}
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
		RunE: runOptions(s, o),
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", ".", "directory of the CA (pki init)")
	f.StringVar(&o.outDir, "out-dir", "", "where to write KIND-NAME.crt and KIND-NAME.key (default: --dir)")
	f.DurationVar(&o.validity, "valid-for", pki.DefaultCertValidity, "how long the certificate is valid")
	switch kind {
	case "member":
		f.IPSliceVar(&o.ips, "ip", nil, "IP address clients and peers reach the member at (repeatable; loopback is always included)")
		f.StringSliceVar(&o.dns, "dns", nil, "DNS name clients and peers reach the member at (repeatable; localhost is always included)")
	case "user":
		f.StringSliceVar(&o.projects, "project", nil, "project the user may see and change (repeatable)")
		f.BoolVar(&o.admin, "admin", false, "an administrator: every project and the cluster-wide objects (agents, members)")
	}
	return c
}

// pkiIssueOptions are pki issue KIND's (options.go).
type pkiIssueOptions struct {
	nameArg
	kind     string        // member, agent or user
	role     pki.Role      // the kind's role; admin with user --admin
	dir      string        // --dir
	outDir   string        // --out-dir
	ips      []net.IP      // --ip
	dns      []string      // --dns
	projects []string      // --project
	admin    bool          // --admin
	validity time.Duration // --valid-for
}

func (o *pkiIssueOptions) complete(args []string) error {
	if err := o.nameArg.complete(args); err != nil {
		return err
	}
	if o.kind == "user" && o.admin {
		o.role = pki.RoleAdmin
	}
	if o.outDir == "" {
		o.outDir = o.dir
	}
	return nil
}

func (o *pkiIssueOptions) validate() error { return nil }

// run signs the certificate with the CA in --dir and writes it and its key.
func (o *pkiIssueOptions) run(_ context.Context, s *session) error {
	ca, err := pki.Load(o.dir)
	if err != nil {
		return err
	}
	base := filepath.Join(o.outDir, o.kind+"-"+o.name)
	req := pki.Request{Identity: pki.Identity{Name: o.name, Role: o.role, Projects: o.projects}, IPs: o.ips, DNS: o.dns, Validity: o.validity}
	cert, err := ca.Issue(req, base+".crt", base+".key", s.env.Now())
	if err != nil {
		return withCode(ExitUsage, err)
	}
	fmt.Fprintf(s.env.Stdout, "%s.crt and %s.key written (%s %s, valid until %s)\n",
		base, base, o.role, o.name, cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func newPKIShowCmd(s *session) *cobra.Command {
	o := &pkiShowOptions{}
	return &cobra.Command{
		Use:     "show FILE",
		Short:   "Print a certificate's subject, identity, SANs and validity",
		Example: `  sanbootctl pki show /etc/sanboot/pki/agent-storage-1.crt`,
		Args:    exactArgs(1, "pki show takes a certificate file"),
		RunE:    runOptions(s, o),
	}
}

// pkiShowOptions are pki show's (options.go).
type pkiShowOptions struct{ file string }

func (o *pkiShowOptions) complete(args []string) error {
	o.file = args[0]
	return nil
}

func (o *pkiShowOptions) validate() error { return nil }

func (o *pkiShowOptions) run(_ context.Context, s *session) error {
	c, err := pki.ReadCert(o.file)
	if err != nil {
		return err
	}
	fmt.Fprint(s.env.Stdout, pki.Describe(c, s.env.Now()))
	return nil
}

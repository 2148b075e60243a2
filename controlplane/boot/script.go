package boot

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/controlplane/view"
)

// DefaultEFIFilename is the boot loader a UEFI node's script has iPXE run
// from its disk when its image names none.
const DefaultEFIFilename = api.DefaultEFIBootPath

// DefaultTokenTTL is how long an unused boot token stays valid.
const DefaultTokenTTL = time.Hour

// MaxRetryWait is the longest a script waits before it fetches itself again:
// waits double from 1 s up to it (iPXE can only compare for equality, so
// it is a power of two).
const MaxRetryWait = 32

// Settings say how scripts and URLs refer to the boot server; the boot
// server and the API server share them.
type Settings struct {
	// URL is the base URL nodes reach the boot server at, such as
	// http://10.0.0.1:8080 (--boot-url). Empty: scripts refer to the boot
	// server with path-absolute references (/boot/...), which iPXE resolves
	// against the URL it fetched the script from.
	URL string
	// Listen is the boot server's listen address; the API's absolute URLs
	// fall back to http://Listen when URL is empty.
	Listen string
	// Tokens: serve a node's script only to a URL that carries its
	// one-time boot token (--boot-tokens).
	Tokens bool
	// TokenTTL is how long an issued token stays valid unused (default
	// DefaultTokenTTL).
	TokenTTL time.Duration
}

// Validate checks the settings a user gave.
func (s Settings) Validate() error {
	if s.URL == "" {
		return nil
	}
	u, err := url.Parse(s.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("--boot-url %q: want http://HOST[:PORT][/PREFIX], the base URL nodes reach the boot server at", s.URL)
	}
	if !safe(s.URL, urlChars) {
		return fmt.Errorf("--boot-url %q: only letters, digits and -._~:/[]%% may appear in it", s.URL)
	}
	return nil
}

// base is what paths are appended to in scripts: the URL without a
// trailing slash, or "" for path-absolute references.
func (s Settings) base() string { return strings.TrimSuffix(s.URL, "/") }

// NodePath is the reference scripts use for node ref's script, with token
// when not empty.
func (s Settings) NodePath(ref state.Ref, token string) string {
	return s.base() + "/boot/" + ref.Project + "/" + ref.Name + tokenQuery("?", token)
}

// MACPath is the reference scripts use for the script of the node with
// mac (normalized), with token when not empty.
func (s Settings) MACPath(mac, token string) string {
	return s.base() + "/boot?mac=" + strings.ReplaceAll(mac, ":", "-") + tokenQuery("&", token)
}

// NodeURL is the absolute URL of node ref's script, for people and tools
// (never empty when URL or Listen is set).
func (s Settings) NodeURL(ref state.Ref, token string) string {
	p := s.NodePath(ref, token)
	if s.URL == "" && s.Listen != "" {
		return "http://" + s.Listen + p
	}
	return p
}

func tokenQuery(sep, token string) string {
	if token == "" {
		return ""
	}
	return sep + "token=" + url.QueryEscape(token)
}

// Plan is what a node's script does: boot from the node's disk, or wait
// and try again (and why).
type Plan struct {
	ref  state.Ref
	boot *bootData
	wait string
}

// Ready reports whether the plan boots the node (and so holds its CHAP
// credentials, if any).
func (p Plan) Ready() bool { return p.boot != nil }

// Reason says why the node waits ("" when it is Ready).
func (p Plan) Reason() string { return p.wait }

type bootData struct {
	Node                             string // project/name
	InitiatorIQN, TargetIQN          string
	EFIFilename                      string // what UEFI nodes boot from the disk
	URIs                             []string
	Username, Password               string
	ReverseUsername, ReversePassword string
	// Failover are the URIs of the agents the node could fail over to,
	// one entry per agent (WithFailover).
	Failover      []failoverData
	FailoverNames string // their names, for the console
	lun           int32
}

type failoverData struct{ URIs []string }

// Failover is an agent a node could fail over to (its status's
// failover_agents) and the portals it tells nodes to use.
type Failover struct {
	Agent   string
	Portals []string
}

// MaxFailoverAgents bounds how many failover agents a script names.
const MaxFailoverAgents = 8

// FailoverOf returns the failover agents of node n (its
// status.failoverAgents) with their portals from st, which must keep
// Agents.
func FailoverOf(st *state.Store, n *sanbootv1.Node) []Failover {
	var out []Failover
	for _, a := range n.GetStatus().GetFailoverAgents() {
		out = append(out, Failover{Agent: a, Portals: view.AgentPortals(st.Agents[a].Msg)})
	}
	return out
}

// WithFailover adds to a plan that boots the agents its node could fail
// over to (at most MaxFailoverAgents, in order): when no portal of the
// node's agent lets it boot, the script tries theirs, one agent after
// the other, before it retries. An agent serves a node's target only
// once the node has moved to it, so this finds the disk after a failover
// that happened after the script was served (a script whose boot token
// is spent retries in place and never fetches the new one). Portals that
// cannot go into a script are left out; a plan that waits is unchanged.
func (p Plan) WithFailover(agents []Failover) Plan {
	if p.boot == nil || len(agents) == 0 {
		return p
	}
	b := *p.boot
	b.Failover, b.FailoverNames = nil, ""
	var names []string
	for _, a := range agents {
		if len(b.Failover) == MaxFailoverAgents {
			break
		}
		if api.ValidateName("agent", a.Agent) != nil {
			continue
		}
		var uris []string
		for _, portal := range a.Portals {
			if uri, err := iscsiURI(portal, b.lun, b.TargetIQN); err == nil && !slices.Contains(b.URIs, uri) {
				uris = append(uris, uri)
			}
		}
		if len(uris) > 0 {
			b.Failover = append(b.Failover, failoverData{URIs: uris})
			names = append(names, a.Agent)
		}
	}
	b.FailoverNames = strings.Join(names, ", ")
	p.boot = &b
	return p
}

// iscsiURI is iPXE's URI of lun of target at portal (IP:PORT):
// iscsi:<server>:<protocol>:<port>:<LUN, hex>:<target>.
func iscsiURI(portal string, lun int32, target string) (string, error) {
	ap, err := netip.ParseAddrPort(portal)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return "", fmt.Errorf("%q is not IP:PORT", portal)
	}
	host := ap.Addr().Unmap().String()
	if ap.Addr().Unmap().Is6() {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("iscsi:%s::%d:%x:%s", host, ap.Port(), lun, target), nil
}

// PlanNode decides what node n (the API's view, with status) is told:
// boot when it is Ready and its status describes its current spec, wait
// otherwise. image is the record of the node's image (nil when unknown:
// UEFI nodes then boot DefaultEFIFilename); secret is the node's CHAP
// credentials (nil when it has none). Values that cannot safely go into a
// script make it wait, saying which.
func PlanNode(n *sanbootv1.Node, image *sanbootv1.Image, secret *sanbootv1.ChapSecret) Plan {
	m, spec, st := n.GetMetadata(), n.GetSpec(), n.GetStatus()
	ref := state.Ref{Project: m.GetProject(), Name: m.GetName()}
	if err := errors.Join(api.ValidateName("project", ref.Project), api.ValidateName("name", ref.Name)); err != nil {
		return Plan{wait: "this node's name cannot be used in a boot script: " + err.Error()}
	}
	p := Plan{ref: ref}
	switch {
	case m.GetDeleteTime() != nil:
		p.wait = "is being deleted"
		return p
	case st.GetPhase() != api.PhaseReady:
		p.wait = "is " + or(st.GetPhase(), api.PhasePending)
		if msg := st.GetMessage(); msg != "" {
			p.wait += ": " + msg
		}
		return p
	case st.GetObservedGeneration() < m.GetGeneration():
		p.wait = fmt.Sprintf("is waiting for its agent to apply spec generation %d (it has applied %d)", m.GetGeneration(), st.GetObservedGeneration())
		return p
	}

	b := &bootData{Node: ref.String(), TargetIQN: st.GetTargetIqn(), InitiatorIQN: spec.GetInitiatorIqn(),
		EFIFilename: or(image.GetSpec().GetEfiBootPath(), DefaultEFIFilename)}
	if b.InitiatorIQN == "" {
		b.InitiatorIQN = api.DefaultInitiatorIQN(ref.Project, ref.Name)
	}
	errs := []error{
		api.ValidateIQN("spec.initiatorIqn", b.InitiatorIQN),
		api.ValidateIQN("status.targetIqn", b.TargetIQN),
		api.ValidateEFIBootPath("image spec.efiBootPath", b.EFIFilename),
	}
	lun := st.GetLun()
	if lun < 0 || lun > 255 {
		errs = append(errs, fmt.Errorf("status.lun: %d is not a LUN iPXE can address (0 to 255)", lun))
	}
	if len(st.GetPortals()) == 0 {
		errs = append(errs, errors.New("status.portals: the agent reported no portal"))
	}
	b.lun = lun
	for i, portal := range st.GetPortals() {
		uri, err := iscsiURI(portal, lun, b.TargetIQN)
		if err != nil {
			errs = append(errs, fmt.Errorf("status.portals[%d]: %w", i, err))
			continue
		}
		b.URIs = append(b.URIs, uri)
	}
	if spec.GetChap() {
		if secret == nil {
			errs = append(errs, errors.New("spec.chap is on but the node has no CHAP credentials; recreate the node"))
		} else {
			b.Username, b.Password = secret.GetUser(), secret.GetSecret()
			errs = append(errs, credential("CHAP user", b.Username), credential("CHAP secret", b.Password))
			if spec.GetMutualChap() {
				b.ReverseUsername, b.ReversePassword = secret.GetMutualUser(), secret.GetMutualSecret()
				errs = append(errs, credential("mutual CHAP user", b.ReverseUsername), credential("mutual CHAP secret", b.ReversePassword))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		p.wait = "cannot be booted with what its records hold: " + err.Error()
		return p
	}
	p.boot = b
	return p
}

// WaitPlan is a plan that waits for reason (a sentence that follows
// "sanboot: "), for requests that name no node that could boot.
func WaitPlan(reason string) Plan { return Plan{wait: reason} }

// Render returns the iPXE script of plan, as served from self (the
// reference the node fetched it with, token included). A script that waits
// fetches self again. A booting script that fails fetches self again too,
// except with tokens (its token is spent): it then retries the sanboot.
func (s Settings) Render(p Plan, self string) string { return s.RenderWith(p, self, nil) }

// RenderWith is Render with the base URLs of the other members' boot
// servers: a script that fetches itself again tries them in turn when
// this server does not answer (its member died).
func (s Settings) RenderWith(p Plan, self string, others []string) string {
	fallbacks := s.fallbacks(self, others)
	var sb strings.Builder
	if p.boot != nil {
		retry := self
		if s.Tokens {
			retry = ""
		}
		if retry == "" {
			fallbacks = nil
		}
		mustExecute(&sb, bootTmpl, struct {
			*bootData
			Retry     string
			Fallbacks []string
			Max       int
		}{p.boot, retry, fallbacks, MaxRetryWait})
		return sb.String()
	}
	who := ""
	if p.ref.Name != "" {
		who = "node " + p.ref.String() + " "
	}
	mustExecute(&sb, waitTmpl, struct {
		Message, Retry string
		Fallbacks      []string
		Max            int
	}{echoText(who + p.wait), self, fallbacks, MaxRetryWait})
	return sb.String()
}

// fallbacks are self's path on the other members' boot servers (bases that
// are not http(s) URLs of safe characters are left out).
func (s Settings) fallbacks(self string, others []string) []string {
	path := strings.TrimPrefix(self, s.base())
	var out []string
	for _, o := range others {
		o = strings.TrimSuffix(o, "/")
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !safe(o, urlChars) || o == s.base() {
			continue
		}
		out = append(out, o+path)
	}
	return out
}

// Generic returns the script for DHCP to hand out: it fetches the script
// of the node that owns the MAC address of the NIC iPXE booted from, and
// tells the boot server the node's firmware (iPXE's ${platform}).
func (s Settings) Generic() string { return s.GenericWith(nil) }

// GenericWith is Generic with the base URLs of the other members' boot
// servers, tried in turn when this one does not answer.
func (s Settings) GenericWith(others []string) string {
	var sb strings.Builder
	path := s.base() + "/boot?mac=${net0/mac:hexhyp}&platform=${platform}"
	mustExecute(&sb, genericTmpl, struct {
		URL       string
		Fallbacks []string
		Max       int
	}{path, s.fallbacks(path, others), MaxRetryWait})
	return sb.String()
}

// WithPlatform adds the firmware a node said it runs (iPXE's ${platform},
// checked with ValidatePlatform) to path, a NodePath or MACPath, so that
// the node's retries say it again.
func WithPlatform(path, platform string) string {
	if platform == "" {
		return path
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + "platform=" + platform
}

// ValidatePlatform checks a firmware name a node sent (iPXE's ${platform}:
// pcbios, efi, ...): empty, or 1 to 32 lower-case letters, digits and '-'.
func ValidatePlatform(platform string) error {
	if len(platform) > 32 || !safe(platform, platformChars) {
		return fmt.Errorf("platform %q: want iPXE's ${platform} (pcbios, efi): at most 32 lower-case letters, digits and '-'", platform)
	}
	return nil
}

func mustExecute(sb *strings.Builder, t *template.Template, data any) {
	if err := t.Execute(sb, data); err != nil {
		panic(fmt.Sprintf("boot: template %s: %v", t.Name(), err)) // the templates are constants
	}
}

// The scripts. Every value in them is validated (names, IQNs, portals,
// credentials, URLs built from those) or passed through echoText. iPXE
// stops a script at the first command that fails unless it is followed by
// "||", so every command that may fail has one. ${sanboot-wait} survives
// chaining: it is the backoff, 1, 2, 4, ... MaxRetryWait seconds.
var (
	bootTmpl = template.Must(template.New("boot").Parse(`#!ipxe
# sanboot: boot script of node {{.Node}}, made by the control plane.
# It holds the node's CHAP credentials: show it to no one but the node.
isset ${sanboot-wait} || set sanboot-wait:int32 1
set initiator-iqn {{.InitiatorIQN}}
{{- if .Username}}
set username {{.Username}}
set password {{.Password}}
{{- else}}
clear username
clear password
{{- end}}
{{- if .ReverseUsername}}
set reverse-username {{.ReverseUsername}}
set reverse-password {{.ReversePassword}}
{{- else}}
clear reverse-username
clear reverse-password
{{- end}}
:sanboot
echo sanboot: node {{.Node}}: booting from {{.TargetIQN}} ({{len .URIs}} portal{{if gt (len .URIs) 1}}s{{end}}, ${platform} firmware)
iseq ${platform} efi && goto sanboot-efi ||
{{- if .Failover}}
sanboot{{range .URIs}} {{.}}{{end}} || goto sanboot-failover
goto sanboot-retry
:sanboot-efi
sanboot --filename {{.EFIFilename}}{{range .URIs}} {{.}}{{end}} || goto sanboot-failover
goto sanboot-retry
:sanboot-failover
echo sanboot: node {{.Node}}: the portals of its agent failed (error ${errno}); trying the agents it fails over to ({{.FailoverNames}})
iseq ${platform} efi && goto sanboot-failover-efi ||
{{range $i, $f := .Failover}}{{if $i}} || {{end}}sanboot{{range $f.URIs}} {{.}}{{end}}{{end}} || goto sanboot-retry
goto sanboot-retry
:sanboot-failover-efi
{{range $i, $f := .Failover}}{{if $i}} || {{end}}sanboot --filename {{$.EFIFilename}}{{range $f.URIs}} {{.}}{{end}}{{end}} || goto sanboot-retry
{{- else}}
sanboot{{range .URIs}} {{.}}{{end}} || goto sanboot-retry
goto sanboot-retry
:sanboot-efi
sanboot --filename {{.EFIFilename}}{{range .URIs}} {{.}}{{end}} || goto sanboot-retry
{{- end}}
:sanboot-retry
echo sanboot: node {{.Node}} could not boot from its disk (error ${errno}); retrying in ${sanboot-wait} s
sleep ${sanboot-wait}
iseq ${sanboot-wait} {{.Max}} || inc sanboot-wait ${sanboot-wait}
{{if .Retry}}chain --replace --autofree {{.Retry}} ||{{range .Fallbacks}} chain --replace --autofree {{.}} ||{{end}} goto sanboot-retry{{else}}goto sanboot{{end}}
`))

	waitTmpl = template.Must(template.New("wait").Parse(`#!ipxe
# sanboot: this node cannot boot from its disk yet; the script says why and
# fetches itself again.
isset ${sanboot-wait} || set sanboot-wait:int32 1
echo sanboot: {{.Message}}
:sanboot-retry
echo sanboot: trying again in ${sanboot-wait} s
sleep ${sanboot-wait}
iseq ${sanboot-wait} {{.Max}} || inc sanboot-wait ${sanboot-wait}
chain --replace --autofree {{.Retry}} ||{{range .Fallbacks}} chain --replace --autofree {{.}} ||{{end}} goto sanboot-retry
`))

	genericTmpl = template.Must(template.New("generic").Parse(`#!ipxe
# sanboot: generic boot script for DHCP to hand out. It fetches the script
# of the node whose spec.macs holds this NIC's MAC address.
isset ${sanboot-wait} || set sanboot-wait:int32 1
:sanboot-fetch
chain --replace --autofree {{.URL}} ||{{range .Fallbacks}} chain --replace --autofree {{.}} ||{{end}} goto sanboot-retry
:sanboot-retry
echo sanboot: could not fetch the boot script of this node (error ${errno}); trying again in ${sanboot-wait} s
sleep ${sanboot-wait}
iseq ${sanboot-wait} {{.Max}} || inc sanboot-wait ${sanboot-wait}
goto sanboot-fetch
`))
)

// Character sets of values that go into scripts. None holds white space,
// '$' (setting expansion), '#' (comment), '|' or '&' (command chaining),
// quotes or backslashes (EFI filenames have their own check:
// api.ValidateEFIBootPath).
const (
	credentialChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-+=/@"
	urlChars        = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/[]%"
	echoChars       = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_/()[]<>=+*@%!?"
	platformChars   = "abcdefghijklmnopqrstuvwxyz0123456789-"
)

func safe(s, chars string) bool {
	for _, r := range s {
		if !strings.ContainsRune(chars, r) {
			return false
		}
	}
	return true
}

// credential checks a CHAP user name or secret.
func credential(what, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("%s is empty", what)
	case len(v) > 255:
		return fmt.Errorf("%s is %d bytes long (at most 255)", what, len(v))
	case !safe(v, credentialChars):
		return fmt.Errorf("%s holds characters a boot script cannot carry (allowed: letters, digits and %s)", what, "._:-+=/@")
	}
	return nil
}

// echoText makes free text (a status message) safe to echo in a script:
// one line, at most 300 bytes, every other character replaced by '_'.
func echoText(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= 300 {
			b.WriteString("...")
			break
		}
		if strings.ContainsRune(echoChars, r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

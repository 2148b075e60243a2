package api

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// DefaultProject is used when a request names no project.
const DefaultProject = "default"

// DefaultAPIAddress is where the control plane's gRPC API listens unless
// told otherwise, and where sanbootctl looks for it.
const DefaultAPIAddress = "127.0.0.1:7443"

// DefaultAuthority is the naming authority of target and initiator IQNs.
const DefaultAuthority = "iqn.2026-11.io.sanboot"

// MaxImageSize bounds spec.size_bytes (64 TiB) so that a typo does not
// become a disk no store can hold.
const MaxImageSize = 64 << 40

// MaxLabels and MaxDescription keep a record far below etcd's value limit.
const (
	MaxLabels      = 64
	MaxDescription = 1024
	// MaxMACs bounds a node's spec.macs and MaxAgents an image's
	// spec.agents.
	MaxMACs   = 16
	MaxAgents = 64
	// maxQuoted is how much of a wrong value an error message repeats.
	maxQuoted = 80
)

func limit(field string, n, max int, unit string) error {
	if n <= max {
		return nil
	}
	return &FieldError{Field: field, Msg: fmt.Sprintf("has %d %s; at most %d are allowed", n, unit, max)}
}

// FieldError says which field is wrong, what it holds and what is allowed.
type FieldError struct {
	Field string // path, e.g. "spec.macs[1]"
	Value string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Msg)
	}
	v := strings.ToValidUTF8(e.Value, "\uFFFD")
	if len(v) > maxQuoted {
		// A long value is not repeated in full: its start and its size.
		cut := maxQuoted
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		return fmt.Sprintf("%s: %q... (%d bytes) %s", e.Field, v[:cut], len(e.Value), e.Msg)
	}
	return fmt.Sprintf("%s: %q %s", e.Field, v, e.Msg)
}

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	iqnRe      = regexp.MustCompile(`^iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[a-z0-9.:-]*)?$`)
	euiRe      = regexp.MustCompile(`^eui\.[0-9A-F]{16}$`)
	naaRe      = regexp.MustCompile(`^naa\.([0-9A-F]{16}|[0-9A-F]{32})$`)
	labelKeyRe = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValRe = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
)

// ValidateName checks a resource, project or agent name: a lowercase DNS
// label (RFC 1123) of at most 63 characters.
func ValidateName(field, s string) error {
	switch {
	case s == "":
		return &FieldError{Field: field, Msg: "is required: a lowercase DNS label such as \"node-01\""}
	case len(s) > 63:
		return &FieldError{Field: field, Value: s, Msg: fmt.Sprintf("is %d characters long; at most 63 are allowed", len(s))}
	case !dnsLabel.MatchString(s):
		return &FieldError{Field: field, Value: s, Msg: "is not a lowercase DNS label: use a-z, 0-9 and '-', starting and ending with a letter or digit"}
	}
	return nil
}

// ValidateIQN checks an iSCSI name in one of the forms of RFC 3720 and
// RFC 3980: iqn.YYYY-MM.reversed.domain[:unique], eui.<16 hex> or
// naa.<16 or 32 hex>. IQNs must be lowercase; eui and naa hex uppercase.
func ValidateIQN(field, s string) error {
	const allowed = "must be iqn.YYYY-MM.reversed.domain[:identifier] (lowercase a-z, 0-9, '-', '.', ':'), eui. followed by 16 hex digits, or naa. followed by 16 or 32 hex digits"
	switch {
	case s == "":
		return &FieldError{Field: field, Msg: "is required: " + allowed}
	case len(s) > 223:
		return &FieldError{Field: field, Value: s, Msg: fmt.Sprintf("is %d bytes long; iSCSI names are at most 223", len(s))}
	case strings.HasPrefix(s, "iqn."):
		if !iqnRe.MatchString(s) {
			return &FieldError{Field: field, Value: s, Msg: allowed}
		}
	case strings.HasPrefix(s, "eui."):
		if !euiRe.MatchString(s) {
			return &FieldError{Field: field, Value: s, Msg: "eui. names take exactly 16 uppercase hex digits, e.g. eui.02004567A425678D"}
		}
	case strings.HasPrefix(s, "naa."):
		if !naaRe.MatchString(s) {
			return &FieldError{Field: field, Value: s, Msg: "naa. names take 16 or 32 uppercase hex digits, e.g. naa.52004567BA64678D"}
		}
	default:
		return &FieldError{Field: field, Value: s, Msg: allowed}
	}
	return nil
}

// NormalizeMAC returns mac as lowercase colon-separated EUI-48
// ("aa:bb:cc:dd:ee:ff"). It accepts ':' or '-' separators and either case.
func NormalizeMAC(field, mac string) (string, error) {
	const allowed = "is not a MAC address: use six hex octets, e.g. 52:54:00:12:34:56"
	if len(mac) != 17 {
		return "", &FieldError{Field: field, Value: mac, Msg: allowed}
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", &FieldError{Field: field, Value: mac, Msg: allowed}
	}
	return hw.String(), nil
}

// ValidatePortal checks an ADDR:PORT portal with a literal IP address.
func ValidatePortal(field, s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return &FieldError{Field: field, Value: s, Msg: "is not a portal: use IP:PORT, e.g. 127.0.0.1:3260 or [::1]:3260"}
	}
	return nil
}

// ValidateLabels checks label keys and values (Kubernetes rules: keys an
// optional DNS prefix and a name of at most 63 characters, values at most 63).
// Errors come in key order, so the same labels always give the same message.
func ValidateLabels(field string, labels map[string]string) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		name := k[strings.LastIndexByte(k, '/')+1:]
		if len(k) > 253 || len(name) > 63 || !labelKeyRe.MatchString(k) {
			errs = append(errs, &FieldError{Field: field, Value: k, Msg: "is not a label key: [prefix/]name, name of at most 63 of A-Z a-z 0-9 - _ ."})
		}
		if len(v) > 63 || !labelValRe.MatchString(v) {
			errs = append(errs, &FieldError{Field: field + "." + k, Value: v, Msg: "is not a label value: at most 63 of A-Z a-z 0-9 - _ ., starting and ending alphanumeric"})
		}
	}
	return errors.Join(errs...)
}

// DefaultInitiatorIQN is the initiator name a node gets when its spec names none.
func DefaultInitiatorIQN(project, node string) string {
	return DefaultAuthority + ":initiator." + project + "." + node
}

// TargetIQN is the name of the target that serves a node's disk.
func TargetIQN(authority, project, node string) string {
	if authority == "" {
		authority = DefaultAuthority
	}
	return authority + ":" + project + "." + node
}

// ProjectOrDefault returns project, or DefaultProject when it is empty.
func ProjectOrDefault(project string) string {
	if project == "" {
		return DefaultProject
	}
	return project
}

// ValidateMeta checks metadata a user sent, defaulting the project in place.
func ValidateMeta(m *sanbootv1.ObjectMeta) error {
	if m == nil {
		return &FieldError{Field: "metadata", Msg: "is required: it holds the name"}
	}
	m.Project = ProjectOrDefault(m.Project)
	var rev error
	if m.Revision < 0 {
		rev = &FieldError{Field: "metadata.revision", Value: strconv.FormatInt(m.Revision, 10),
			Msg: "is negative: give the revision you read (get -o yaml), or 0 for any"}
	}
	return errors.Join(rev,
		ValidateName("metadata.project", m.Project),
		ValidateName("metadata.name", m.Name),
		ValidateLabels("metadata.labels", m.Labels),
		limit("metadata.labels", len(m.Labels), MaxLabels, "labels"),
	)
}

// ValidateNode checks a node a user sent and normalises it in place: default
// project, lowercase MACs. It returns every problem at once.
func ValidateNode(n *sanbootv1.Node) error {
	if n == nil {
		return &FieldError{Field: "node", Msg: "is required"}
	}
	errs := []error{ValidateMeta(n.Metadata)}
	s := n.Spec
	if s == nil {
		return errors.Join(append(errs, &FieldError{Field: "spec", Msg: "is required: it names the image"})...)
	}
	errs = append(errs, ValidateName("spec.image", s.Image))
	if s.InitiatorIqn != "" {
		errs = append(errs, ValidateIQN("spec.initiatorIqn", s.InitiatorIqn))
	}
	seen := map[string]int{}
	if err := limit("spec.macs", len(s.Macs), MaxMACs, "MACs"); err != nil {
		return errors.Join(append(errs, err)...)
	}
	for i, mac := range s.Macs {
		field := "spec.macs[" + strconv.Itoa(i) + "]"
		norm, err := NormalizeMAC(field, mac)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if first, dup := seen[norm]; dup {
			errs = append(errs, &FieldError{Field: field, Value: mac,
				Msg: fmt.Sprintf("is the same MAC as spec.macs[%d]; list each MAC once", first)})
		} else {
			seen[norm] = i
		}
		s.Macs[i] = norm
	}
	if s.Agent != "" {
		errs = append(errs, ValidateName("spec.agent", s.Agent))
	}
	if s.MutualChap && !s.Chap {
		errs = append(errs, &FieldError{Field: "spec.mutualChap", Value: "true", Msg: "needs spec.chap: mutual CHAP adds the target's credentials to the node's"})
	}
	return errors.Join(errs...)
}

// ValidateImage checks an image a user sent, defaulting it in place.
func ValidateImage(im *sanbootv1.Image) error {
	if im == nil {
		return &FieldError{Field: "image", Msg: "is required"}
	}
	errs := []error{ValidateMeta(im.Metadata)}
	s := im.Spec
	if s == nil {
		return errors.Join(append(errs, &FieldError{Field: "spec", Msg: "is required: it gives the size and source"})...)
	}
	// A snapshot or a copy may leave the size out (0): the API server takes
	// it from the node's image or the source image.
	derived := false
	switch s.GetSource().GetKind().(type) {
	case *sanbootv1.ImageSource_Snapshot, *sanbootv1.ImageSource_Copy:
		derived = true
	}
	if (s.SizeBytes != 0 || !derived) && (s.SizeBytes <= 0 || s.SizeBytes%512 != 0 || s.SizeBytes > MaxImageSize) {
		errs = append(errs, &FieldError{Field: "spec.sizeBytes", Value: strconv.FormatInt(s.SizeBytes, 10),
			Msg: "must be a positive multiple of 512 bytes, at most 64 TiB"})
	}
	errs = append(errs, limit("spec.description", len(s.Description), MaxDescription, "bytes"))
	if err := limit("spec.agents", len(s.Agents), MaxAgents, "agents"); err != nil {
		errs = append(errs, err)
	} else {
		for i, a := range s.Agents {
			errs = append(errs, ValidateName("spec.agents["+strconv.Itoa(i)+"]", a))
		}
	}
	if s.Source == nil {
		s.Source = &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Blank{Blank: &sanbootv1.BlankSource{}}}
	}
	switch src := s.Source.Kind.(type) {
	case *sanbootv1.ImageSource_Blank:
	case *sanbootv1.ImageSource_Snapshot:
		errs = append(errs, ValidateName("spec.source.snapshot.node", src.Snapshot.GetNode()))
	case *sanbootv1.ImageSource_Copy:
		errs = append(errs, ValidateName("spec.source.copy.image", src.Copy.GetImage()))
	case *sanbootv1.ImageSource_Url:
		errs = append(errs, validateURL("spec.source.url.url", src.Url.GetUrl()))
		errs = append(errs, validateSHA256("spec.source.url.sha256", src.Url.GetSha256(), true))
	case *sanbootv1.ImageSource_Upload:
		if src.Upload.GetUploadId() == "" {
			errs = append(errs, &FieldError{Field: "spec.source.upload.uploadId", Msg: "is required: the id the upload returned"})
		}
		errs = append(errs, validateSHA256("spec.source.upload.sha256", src.Upload.GetSha256(), false))
	default:
		errs = append(errs, &FieldError{Field: "spec.source", Msg: "must be one of blank, upload, url, snapshot, copy"})
	}
	return errors.Join(errs...)
}

// validateURL checks a URL every agent fetches by itself: http or https, with
// a host.
func validateURL(field, s string) error {
	const allowed = "must be an http:// or https:// URL with a host, e.g. https://images.example.com/ubuntu.raw"
	if s == "" {
		return &FieldError{Field: field, Msg: "is required: " + allowed}
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return &FieldError{Field: field, Value: s, Msg: allowed}
	}
	return nil
}

func validateSHA256(field, s string, optional bool) error {
	if s == "" && optional {
		return nil
	}
	if len(s) != 64 || strings.Trim(s, "0123456789abcdef") != "" {
		return &FieldError{Field: field, Value: s, Msg: "must be 64 lowercase hex digits (a sha256)"}
	}
	return nil
}

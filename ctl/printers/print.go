package printers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/goccy/go-yaml"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/bytesize"
)

// Output formats of get.
const (
	FormatTable = "table"
	FormatWide  = "wide"
	FormatJSON  = "json"
	FormatYAML  = "yaml"
)

// FormatName prints kind/name per object; jsonpath=TEMPLATE runs a
// template over the JSON document (jsonpath.go).
const (
	FormatName           = "name"
	FormatJSONPathPrefix = "jsonpath="
)

// FormatError is the error of an -o value that is not a format (a usage
// error: sanbootctl exits 2).
type FormatError struct{ Err error }

func (e *FormatError) Error() string { return e.Err.Error() }
func (e *FormatError) Unwrap() error { return e.Err }

// CheckFormat checks an -o value: a *FormatError when it is not one of
// the formats.
func CheckFormat(f string) error {
	switch f {
	case FormatTable, FormatWide, FormatJSON, FormatYAML, FormatName:
		return nil
	}
	if strings.HasPrefix(f, FormatJSONPathPrefix) {
		if _, err := parseJSONPath(strings.TrimPrefix(f, FormatJSONPathPrefix)); err != nil {
			return &FormatError{fmt.Errorf("-o %s: %w", f, err)}
		}
		return nil
	}
	return &FormatError{fmt.Errorf("-o %q: use table, wide, json, yaml, name or jsonpath=TEMPLATE", f)}
}

// Printer writes resources in one format. Tables have stable columns; JSON
// is the proto JSON mapping (lowerCamelCase names, RFC 3339 times, int64 as
// strings; status printed whole: ObjectJSON) and YAML is that same JSON as
// YAML.
type Printer struct {
	W           io.Writer
	Format      string
	AllProjects bool // add a PROJECT column
	Now         time.Time
	// Single prints one object instead of a list (get KIND NAME).
	Single bool
	// NoHeader leaves out a table's header (get -w after the first rows;
	// with Widths only).
	NoHeader bool
	// Widths, when set, are the column widths of earlier output that this
	// table keeps to (and widens): get -w prints rows one call at a time.
	Widths *[]int
}

// Nodes prints nodes: NAME, IMAGE, AGENT, PHASE, AGE (wide: initiator,
// target, portals, message).
func (p Printer) Nodes(nodes []*sanbootv1.Node) error {
	slices.SortFunc(nodes, func(a, b *sanbootv1.Node) int { return CompareMeta(a.GetMetadata(), b.GetMetadata()) })
	if p.Structured() {
		return p.StructuredOut("nodes", ProtoList(nodes))
	}
	wide := p.Format == FormatWide
	header := p.WithProject("NAME", "IMAGE", "AGENT", "PHASE", "AGE")
	if wide {
		header = append(header, "INITIATOR", "TARGET", "PORTALS", "FAILOVER", "MESSAGE")
	}
	rows := make([][]string, 0, len(nodes))
	for _, n := range nodes {
		m, spec, st := n.GetMetadata(), n.GetSpec(), n.GetStatus()
		row := p.ProjectCell(m.GetProject(), m.GetName(), spec.GetImage(), OrNone(st.GetAgent()), OrNone(st.GetPhase()), Age(p.Now, m.GetCreateTime()))
		if wide {
			initiator := spec.GetInitiatorIqn()
			if initiator == "" {
				initiator = api.DefaultInitiatorIQN(api.ProjectOrDefault(m.GetProject()), m.GetName())
			}
			row = append(row, initiator, OrNone(st.GetTargetIqn()), OrNone(strings.Join(st.GetPortals(), ",")),
				OrNone(strings.Join(st.GetFailoverAgents(), ",")), OrNone(st.GetMessage()))
		}
		rows = append(rows, row)
	}
	return p.Table(header, rows)
}

// Images prints images: NAME, SIZE, PHASE, REPLICAS, USED-BY, AGE (wide:
// source, agents, sha256, replica phases).
func (p Printer) Images(images []*sanbootv1.Image) error {
	slices.SortFunc(images, func(a, b *sanbootv1.Image) int { return CompareMeta(a.GetMetadata(), b.GetMetadata()) })
	if p.Structured() {
		return p.StructuredOut("images", ProtoList(images))
	}
	wide := p.Format == FormatWide
	header := p.WithProject("NAME", "SIZE", "PHASE", "REPLICAS", "USED-BY", "AGE")
	if wide {
		header = append(header, "SOURCE", "AGENTS", "SHA256", "REPLICA-PHASES")
	}
	rows := make([][]string, 0, len(images))
	for _, im := range images {
		m, spec, st := im.GetMetadata(), im.GetSpec(), im.GetStatus()
		ready := readyReplicas(st)
		total := len(st.GetReplicas())
		if n := len(spec.GetAgents()); n > 0 {
			total = n
		}
		row := p.ProjectCell(m.GetProject(), m.GetName(), bytesize.Format(spec.GetSizeBytes()), OrNone(st.GetPhase()),
			fmt.Sprintf("%d/%d", ready, total), strconv.Itoa(len(st.GetUsedBy())), Age(p.Now, m.GetCreateTime()))
		if wide {
			agents := strings.Join(spec.GetAgents(), ",")
			if agents == "" {
				agents = "<all>"
			}
			var phases []string
			for _, r := range st.GetReplicas() {
				phases = append(phases, r.GetAgent()+"="+OrNone(r.GetPhase())+cloneDepth(r))
			}
			row = append(row, DescribeSource(spec.GetSource()), agents, OrNone(ShortSum(st.GetSha256())), OrNone(strings.Join(phases, ",")))
		}
		rows = append(rows, row)
	}
	return p.Table(header, rows)
}

// Agents prints agents: NAME, STATE, DRIVER, PORTALS, NODES, FREE,
// CAPACITY, VERSION, AGE (wide: clone mode, advertise, store, domain,
// message).
func (p Printer) Agents(agents []*sanbootv1.Agent) error {
	slices.SortFunc(agents, func(a, b *sanbootv1.Agent) int {
		return strings.Compare(a.GetRecord().GetName(), b.GetRecord().GetName())
	})
	if p.Structured() {
		return p.StructuredOut("agents", ProtoList(agents))
	}
	wide := p.Format == FormatWide
	header := []string{"NAME", "STATE", "DRIVER", "PORTALS", "NODES", "FREE", "CAPACITY", "VERSION", "AGE"}
	if wide {
		header = append(header, "CLONE-MODE", "ADVERTISE", "STORE", "DOMAIN", "MESSAGE")
	}
	rows := make([][]string, 0, len(agents))
	for _, a := range agents {
		r := a.GetRecord()
		row := []string{r.GetName(), OrNone(a.GetState()), OrNone(r.GetDriver()), OrNone(strings.Join(r.GetPortals(), ",")),
			strconv.FormatInt(a.GetNodes(), 10), bytesize.Format(r.GetFreeBytes()), bytesize.Format(r.GetCapacityBytes()),
			OrNone(r.GetVersion()), Age(p.Now, r.GetStartTime())}
		if wide {
			row = append(row, OrNone(r.GetCloneMode()), OrNone(strings.Join(r.GetAdvertisePortals(), ",")),
				OrNone(r.GetStoreKind()), OrNone(r.GetStorageDomain()), OrNone(a.GetMessage()))
		}
		rows = append(rows, row)
	}
	return p.Table(header, rows)
}

// readyReplicas counts an image's Ready replicas.
func readyReplicas(st *sanbootv1.ImageStatus) int {
	n := 0
	for _, r := range st.GetReplicas() {
		if r.GetPhase() == api.ReplicaReady {
			n++
		}
	}
	return n
}

// cloneDepth says, for a replica in a store of clones (rbd), how many
// images it reads through and whether it is being flattened: "(depth 5,
// flattening)"; "" for a flat image.
func cloneDepth(r *sanbootv1.ImageReplica) string {
	switch {
	case r.GetFlattening():
		return fmt.Sprintf("(depth %d, flattening)", r.GetCloneDepth())
	case r.GetCloneDepth() > 0:
		return fmt.Sprintf("(depth %d)", r.GetCloneDepth())
	}
	return ""
}

// ShortSum is the first 12 hex digits of a sha256, enough to compare by
// eye (-o json shows all of it).
func ShortSum(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// DescribeSource says in a few words where an image's bytes come from.
func DescribeSource(s *sanbootv1.ImageSource) string {
	switch k := s.GetKind().(type) {
	case *sanbootv1.ImageSource_Upload:
		return "upload"
	case *sanbootv1.ImageSource_Url:
		return k.Url.GetUrl()
	case *sanbootv1.ImageSource_Snapshot:
		return "snapshot of node/" + k.Snapshot.GetNode()
	case *sanbootv1.ImageSource_Copy:
		return "copy of image/" + k.Copy.GetImage()
	default:
		return "blank"
	}
}

// CompareMeta orders objects by project, then name.
func CompareMeta(a, b *sanbootv1.ObjectMeta) int {
	if c := strings.Compare(a.GetProject(), b.GetProject()); c != 0 {
		return c
	}
	return strings.Compare(a.GetName(), b.GetName())
}

// Structured says whether the format is a document (JSON, YAML, names or
// jsonpath) rather than a table.
func (p Printer) Structured() bool {
	return p.Format == FormatJSON || p.Format == FormatYAML || p.Format == FormatName || strings.HasPrefix(p.Format, FormatJSONPathPrefix)
}

// WithProject adds the PROJECT column to a header with AllProjects.
func (p Printer) WithProject(cols ...string) []string {
	if p.AllProjects {
		return append([]string{"PROJECT"}, cols...)
	}
	return cols
}

// ProjectCell adds the project's cell to a row with AllProjects.
func (p Printer) ProjectCell(project string, cells ...string) []string {
	if p.AllProjects {
		return append([]string{project}, cells...)
	}
	return cells
}

// Table writes aligned columns. Cells never contain tabs or newlines (a
// multi-line message would break the alignment).
func (p Printer) Table(header []string, rows [][]string) error {
	if p.Widths != nil {
		return p.fixedTable(header, rows)
	}
	tw := tabwriter.NewWriter(p.W, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	clean := strings.NewReplacer("\t", " ", "\n", " ", "\r", " ")
	for _, row := range rows {
		for i := range row {
			row[i] = clean.Replace(row[i])
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// ProtoList is items as proto messages, for StructuredOut.
func ProtoList[M proto.Message](items []M) []proto.Message {
	out := make([]proto.Message, len(items))
	for i, m := range items {
		out[i] = m
	}
	return out
}

// StructuredOut writes items as JSON or YAML: the object itself when
// p.Single, else {"<key>": [items...]} (the list is present even when empty).
func (p Printer) StructuredOut(key string, items []proto.Message) error {
	if p.Format == FormatName {
		kind := strings.TrimSuffix(key, "s")
		for _, m := range items {
			fmt.Fprintf(p.W, "%s/%s\n", kind, objectName(m))
		}
		return nil
	}
	var doc []byte
	if p.Single && len(items) == 1 {
		b, err := ObjectJSON(items[0])
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		doc = b
	} else {
		raw := make([]json.RawMessage, len(items))
		for i, m := range items {
			b, err := ObjectJSON(m)
			if err != nil {
				return fmt.Errorf("encode JSON: %w", err)
			}
			raw[i] = b
		}
		b, err := json.Marshal(map[string][]json.RawMessage{key: raw})
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		doc = b
	}
	// protojson varies its whitespace on purpose; compacting first makes the
	// output stable.
	var compact bytes.Buffer
	if err := json.Compact(&compact, doc); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	if strings.HasPrefix(p.Format, FormatJSONPathPrefix) {
		return jsonPathOut(p.W, p.Format, compact.Bytes())
	}
	if p.Format == FormatYAML {
		y, err := JSONToYAML(compact.Bytes())
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = p.W.Write(y)
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err := p.W.Write(out.Bytes())
	return err
}

// yaml11Sexagesimal matches strings that YAML 1.1 readers (PyYAML, older
// tools) take for base-60 numbers, such as the MAC 52:54:00:12:34:56.
var yaml11Sexagesimal = regexp.MustCompile(`^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$`)

// JSONToYAML converts JSON to YAML keeping the order of keys. Strings that a
// YAML 1.1 reader would take for something else are quoted (go-yaml already
// quotes yes/no/on/off; base-60 numbers are added here).
func JSONToYAML(j []byte) ([]byte, error) {
	var v any
	if err := yaml.UnmarshalWithOptions(j, &v, yaml.UseOrderedMap()); err != nil {
		return nil, err
	}
	return yaml.MarshalWithOptions(v, yaml.CustomMarshaler[string](func(s string) ([]byte, error) {
		if yaml11Sexagesimal.MatchString(s) {
			return []byte(strconv.Quote(s)), nil
		}
		return yaml.Marshal(s)
	}))
}

// objectName is the name of a node, image or agent.
func objectName(m proto.Message) string {
	switch v := m.(type) {
	case interface{ GetMetadata() *sanbootv1.ObjectMeta }:
		return v.GetMetadata().GetName()
	case *sanbootv1.Agent:
		return v.GetRecord().GetName()
	case *sanbootv1.ClusterMember:
		return v.GetName()
	}
	return ""
}

// fixedTable prints a table whose columns are at least *p.Widths wide, so
// that rows printed by later calls line up with the first ones.
func (p Printer) fixedTable(header []string, rows [][]string) error {
	clean := strings.NewReplacer("\t", " ", "\n", " ", "\r", " ")
	w := *p.Widths
	for len(w) < len(header) {
		w = append(w, 0)
	}
	for _, r := range append([][]string{header}, rows...) {
		for i, c := range r {
			r[i] = clean.Replace(c)
			w[i] = max(w[i], len(r[i]))
		}
	}
	*p.Widths = w
	var b strings.Builder
	line := func(r []string) {
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c + strings.Repeat(" ", w[i]-len(c)+3))
		}
		b.WriteString("\n")
	}
	if !p.NoHeader {
		line(header)
	}
	for _, r := range rows {
		line(r)
	}
	_, err := io.WriteString(p.W, b.String())
	return err
}

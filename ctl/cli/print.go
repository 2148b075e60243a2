package cli

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
	formatTable = "table"
	formatWide  = "wide"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

// formatName prints kind/name per object; jsonpath=TEMPLATE runs a
// template over the JSON document (jsonpath.go).
const (
	formatName           = "name"
	formatJSONPathPrefix = "jsonpath="
)

func checkFormat(f string) error {
	switch f {
	case formatTable, formatWide, formatJSON, formatYAML, formatName:
		return nil
	}
	if strings.HasPrefix(f, formatJSONPathPrefix) {
		if _, err := parseJSONPath(strings.TrimPrefix(f, formatJSONPathPrefix)); err != nil {
			return withCode(ExitUsage, fmt.Errorf("-o %s: %w", f, err))
		}
		return nil
	}
	return usageErrorf("-o %q: use table, wide, json, yaml, name or jsonpath=TEMPLATE", f)
}

// printer writes resources in one format. Tables have stable columns; JSON
// is the proto JSON mapping (lowerCamelCase names, RFC 3339 times, int64 as
// strings; status printed whole: objectJSON) and YAML is that same JSON as
// YAML.
type printer struct {
	w           io.Writer
	format      string
	allProjects bool // add a PROJECT column
	now         time.Time
	// single prints one object instead of a list (get KIND NAME).
	single bool
	// noHeader leaves out a table's header (get -w after the first rows;
	// with widths only).
	noHeader bool
	// widths, when set, are the column widths of earlier output that this
	// table keeps to (and widens): get -w prints rows one call at a time.
	widths *[]int
}

func (p printer) nodes(nodes []*sanbootv1.Node) error {
	slices.SortFunc(nodes, func(a, b *sanbootv1.Node) int { return compareMeta(a.GetMetadata(), b.GetMetadata()) })
	if p.structured() {
		return p.structuredOut("nodes", protoList(nodes))
	}
	wide := p.format == formatWide
	header := p.withProject("NAME", "IMAGE", "AGENT", "PHASE", "AGE")
	if wide {
		header = append(header, "INITIATOR", "TARGET", "PORTALS", "FAILOVER", "MESSAGE")
	}
	rows := make([][]string, 0, len(nodes))
	for _, n := range nodes {
		m, spec, st := n.GetMetadata(), n.GetSpec(), n.GetStatus()
		row := p.projectCell(m.GetProject(), m.GetName(), spec.GetImage(), orNone(st.GetAgent()), orNone(st.GetPhase()), age(p.now, m.GetCreateTime()))
		if wide {
			initiator := spec.GetInitiatorIqn()
			if initiator == "" {
				initiator = api.DefaultInitiatorIQN(api.ProjectOrDefault(m.GetProject()), m.GetName())
			}
			row = append(row, initiator, orNone(st.GetTargetIqn()), orNone(strings.Join(st.GetPortals(), ",")),
				orNone(strings.Join(st.GetFailoverAgents(), ",")), orNone(st.GetMessage()))
		}
		rows = append(rows, row)
	}
	return p.table(header, rows)
}

func (p printer) images(images []*sanbootv1.Image) error {
	slices.SortFunc(images, func(a, b *sanbootv1.Image) int { return compareMeta(a.GetMetadata(), b.GetMetadata()) })
	if p.structured() {
		return p.structuredOut("images", protoList(images))
	}
	wide := p.format == formatWide
	header := p.withProject("NAME", "SIZE", "PHASE", "REPLICAS", "USED-BY", "AGE")
	if wide {
		header = append(header, "SOURCE", "AGENTS", "SHA256", "REPLICA-PHASES")
	}
	rows := make([][]string, 0, len(images))
	for _, im := range images {
		m, spec, st := im.GetMetadata(), im.GetSpec(), im.GetStatus()
		ready := 0
		for _, r := range st.GetReplicas() {
			if r.GetPhase() == api.ReplicaReady {
				ready++
			}
		}
		total := len(st.GetReplicas())
		if n := len(spec.GetAgents()); n > 0 {
			total = n
		}
		row := p.projectCell(m.GetProject(), m.GetName(), bytesize.Format(spec.GetSizeBytes()), orNone(st.GetPhase()),
			fmt.Sprintf("%d/%d", ready, total), strconv.Itoa(len(st.GetUsedBy())), age(p.now, m.GetCreateTime()))
		if wide {
			agents := strings.Join(spec.GetAgents(), ",")
			if agents == "" {
				agents = "<all>"
			}
			var phases []string
			for _, r := range st.GetReplicas() {
				phases = append(phases, r.GetAgent()+"="+orNone(r.GetPhase())+cloneDepth(r))
			}
			row = append(row, describeSource(spec.GetSource()), agents, orNone(shortSum(st.GetSha256())), orNone(strings.Join(phases, ",")))
		}
		rows = append(rows, row)
	}
	return p.table(header, rows)
}

func (p printer) agents(agents []*sanbootv1.Agent) error {
	slices.SortFunc(agents, func(a, b *sanbootv1.Agent) int {
		return strings.Compare(a.GetRecord().GetName(), b.GetRecord().GetName())
	})
	if p.structured() {
		return p.structuredOut("agents", protoList(agents))
	}
	wide := p.format == formatWide
	header := []string{"NAME", "STATE", "DRIVER", "PORTALS", "NODES", "FREE", "CAPACITY", "VERSION", "AGE"}
	if wide {
		header = append(header, "CLONE-MODE", "ADVERTISE", "STORE", "DOMAIN", "MESSAGE")
	}
	rows := make([][]string, 0, len(agents))
	for _, a := range agents {
		r := a.GetRecord()
		row := []string{r.GetName(), orNone(a.GetState()), orNone(r.GetDriver()), orNone(strings.Join(r.GetPortals(), ",")),
			strconv.FormatInt(a.GetNodes(), 10), bytesize.Format(r.GetFreeBytes()), bytesize.Format(r.GetCapacityBytes()),
			orNone(r.GetVersion()), age(p.now, r.GetStartTime())}
		if wide {
			row = append(row, orNone(r.GetCloneMode()), orNone(strings.Join(r.GetAdvertisePortals(), ",")),
				orNone(r.GetStoreKind()), orNone(r.GetStorageDomain()), orNone(a.GetMessage()))
		}
		rows = append(rows, row)
	}
	return p.table(header, rows)
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

// shortSum is the first 12 hex digits of a sha256, enough to compare by
// eye (-o json shows all of it).
func shortSum(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func describeSource(s *sanbootv1.ImageSource) string {
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

func compareMeta(a, b *sanbootv1.ObjectMeta) int {
	if c := strings.Compare(a.GetProject(), b.GetProject()); c != 0 {
		return c
	}
	return strings.Compare(a.GetName(), b.GetName())
}

func (p printer) structured() bool {
	return p.format == formatJSON || p.format == formatYAML || p.format == formatName || strings.HasPrefix(p.format, formatJSONPathPrefix)
}

func (p printer) withProject(cols ...string) []string {
	if p.allProjects {
		return append([]string{"PROJECT"}, cols...)
	}
	return cols
}

func (p printer) projectCell(project string, cells ...string) []string {
	if p.allProjects {
		return append([]string{project}, cells...)
	}
	return cells
}

// table writes aligned columns. Cells never contain tabs or newlines (a
// multi-line message would break the alignment).
func (p printer) table(header []string, rows [][]string) error {
	if p.widths != nil {
		return p.fixedTable(header, rows)
	}
	tw := tabwriter.NewWriter(p.w, 0, 8, 3, ' ', 0)
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

func protoList[M proto.Message](items []M) []proto.Message {
	out := make([]proto.Message, len(items))
	for i, m := range items {
		out[i] = m
	}
	return out
}

// structuredOut writes items as JSON or YAML: the object itself when
// p.single, else {"<key>": [items...]} (the list is present even when empty).
func (p printer) structuredOut(key string, items []proto.Message) error {
	if p.format == formatName {
		kind := strings.TrimSuffix(key, "s")
		for _, m := range items {
			fmt.Fprintf(p.w, "%s/%s\n", kind, objectName(m))
		}
		return nil
	}
	var doc []byte
	if p.single && len(items) == 1 {
		b, err := objectJSON(items[0])
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		doc = b
	} else {
		raw := make([]json.RawMessage, len(items))
		for i, m := range items {
			b, err := objectJSON(m)
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
	if strings.HasPrefix(p.format, formatJSONPathPrefix) {
		return jsonPathOut(p.w, p.format, compact.Bytes())
	}
	if p.format == formatYAML {
		y, err := jsonToYAML(compact.Bytes())
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = p.w.Write(y)
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err := p.w.Write(out.Bytes())
	return err
}

// yaml11Sexagesimal matches strings that YAML 1.1 readers (PyYAML, older
// tools) take for base-60 numbers, such as the MAC 52:54:00:12:34:56.
var yaml11Sexagesimal = regexp.MustCompile(`^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$`)

// jsonToYAML converts JSON to YAML keeping the order of keys. Strings that a
// YAML 1.1 reader would take for something else are quoted (go-yaml already
// quotes yes/no/on/off; base-60 numbers are added here).
func jsonToYAML(j []byte) ([]byte, error) {
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

// fixedTable prints a table whose columns are at least *p.widths wide, so
// that rows printed by later calls line up with the first ones.
func (p printer) fixedTable(header []string, rows [][]string) error {
	clean := strings.NewReplacer("\t", " ", "\n", " ", "\r", " ")
	w := *p.widths
	for len(w) < len(header) {
		w = append(w, 0)
	}
	for _, r := range append([][]string{header}, rows...) {
		for i, c := range r {
			r[i] = clean.Replace(c)
			w[i] = max(w[i], len(r[i]))
		}
	}
	*p.widths = w
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
	if !p.noHeader {
		line(header)
	}
	for _, r := range rows {
		line(r)
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

package manifest

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/goccy/go-yaml/ast"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/bytesize"
)

// decoder walks the syntax tree of one input.
type decoder struct {
	file, dir, project string
	anchors            map[string]ast.Node
	objs               []*Object
	broken             []*Object // objects with decode errors
	errs               []error
	cur                *Object // the object being decoded
	curRef             string
	// lines is how many lines of the input come before the part being
	// decoded (Decode parses a file a document at a time).
	lines int
}

func (d *decoder) at(n ast.Node) Position {
	p := Position{File: d.file}
	// A block mapping's token is the ':' of its first pair: point at the
	// first key instead, where the reader's eye goes.
	switch m := n.(type) {
	case *ast.MappingNode:
		if len(m.Values) > 0 && !m.IsFlowStyle {
			n = m.Values[0].Key
		}
	case *ast.MappingValueNode:
		n = m.Key
	}
	if n != nil {
		if tk := n.GetToken(); tk != nil && tk.Position != nil {
			p.Line, p.Column = d.lines+tk.Position.Line, tk.Position.Column
		}
	}
	return p
}

func (d *decoder) fail(n ast.Node, path, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if path != "" {
		msg = path + ": " + msg
	}
	d.errs = append(d.errs, &Error{Pos: d.at(n), Object: d.curRef, Err: fmt.Errorf("%s", msg)})
	if d.cur != nil {
		d.cur.failed = append(d.cur.failed, path)
	}
}

// mark records where the value at path is.
func (d *decoder) mark(path string, n ast.Node) {
	if d.cur != nil {
		d.cur.pos[path] = d.at(n)
	}
}

// unwrap resolves anchors, aliases and tags to the node they stand for.
func (d *decoder) unwrap(n ast.Node) ast.Node {
	for range 64 {
		switch v := n.(type) {
		case *ast.AnchorNode:
			d.anchors[v.Name.String()] = v.Value
			n = v.Value
		case *ast.AliasNode:
			t, ok := d.anchors[v.Value.String()]
			if !ok {
				return n
			}
			n = t
		case *ast.TagNode:
			n = v.Value
		default:
			return n
		}
	}
	return n
}

func isNull(n ast.Node) bool {
	_, ok := n.(*ast.NullNode)
	return ok
}

// kindOf names a node's type for "want X, got Y" messages.
func kindOf(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode, *ast.LiteralNode:
		return "a string"
	case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "a number"
	case *ast.BoolNode:
		return "a boolean"
	case *ast.NullNode:
		return "null"
	case *ast.AliasNode:
		return "an alias of an unknown anchor"
	}
	return "a " + n.Type().String()
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// field is one known key of a mapping.
type field struct {
	name string
	// decode reads the value; nil means the field is read-only and ignored.
	decode func(v ast.Node, path string)
}

// mapping decodes a mapping with the given fields. It reports unknown and
// repeated keys, and returns false when n is not a mapping.
func (d *decoder) mapping(n ast.Node, path string, fields []field) bool {
	n = d.unwrap(n)
	var pairs []*ast.MappingValueNode
	switch m := n.(type) {
	case *ast.MappingNode:
		pairs = m.Values
	case *ast.MappingValueNode:
		pairs = []*ast.MappingValueNode{m}
	case *ast.NullNode:
		return true // an empty mapping
	default:
		d.fail(n, path, "want a mapping, got %s", kindOf(n))
		return false
	}
	seen := map[string]bool{}
	for _, kv := range pairs {
		key := keyString(kv.Key)
		kpath := join(path, key)
		if seen[key] {
			d.fail(kv.Key, kpath, "is given twice: give each field once")
			continue
		}
		seen[key] = true
		i := slices.IndexFunc(fields, func(f field) bool { return f.name == key })
		if i < 0 {
			names := make([]string, 0, len(fields))
			for _, f := range fields {
				if f.decode != nil {
					names = append(names, f.name)
				}
			}
			hint := "known fields: " + strings.Join(names, ", ")
			if s := suggest(key, names); s != "" {
				hint = fmt.Sprintf("did you mean %q? (%s)", s, hint)
			}
			d.fail(kv.Key, join(path, key), "unknown field; %s", hint)
			continue
		}
		if fields[i].decode == nil {
			continue // read-only: ignored
		}
		d.mark(kpath, kv.Value)
		fields[i].decode(kv.Value, kpath)
	}
	return true
}

func keyString(k ast.MapKeyNode) string {
	switch v := k.(type) {
	case *ast.StringNode:
		return v.Value
	}
	return k.String()
}

// suggest returns the known name closest to key, if it is close.
func suggest(key string, names []string) string {
	norm := func(s string) string { return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s)) }
	best, bestD := "", 3
	for _, n := range names {
		if norm(n) == norm(key) {
			return n
		}
		if dist := levenshtein(strings.ToLower(key), strings.ToLower(n)); dist < bestD {
			best, bestD = n, dist
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func (d *decoder) str(n ast.Node, path string, dst *string) {
	n = d.unwrap(n)
	switch v := n.(type) {
	case *ast.StringNode:
		*dst = v.Value
	case *ast.LiteralNode:
		*dst = v.Value.Value
	case *ast.NullNode:
		*dst = ""
	default:
		d.fail(n, path, "want a string, got %s%s", kindOf(n), quoteHint(n))
	}
}

// quoteHint suggests quoting a scalar that YAML read as something else.
func quoteHint(n ast.Node) string {
	switch n.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
		return fmt.Sprintf(" (%s): quote it, e.g. \"%s\"", n.GetToken().Value, n.GetToken().Value)
	}
	return ""
}

func (d *decoder) boolean(n ast.Node, path string, dst *bool) {
	n = d.unwrap(n)
	switch v := n.(type) {
	case *ast.BoolNode:
		*dst = v.Value
	case *ast.NullNode:
		*dst = false
	default:
		d.fail(n, path, "want true or false, got %s", kindOf(n))
	}
}

func (d *decoder) strList(n ast.Node, path string, dst *[]string) {
	n = d.unwrap(n)
	switch v := n.(type) {
	case *ast.NullNode:
		*dst = nil
	case *ast.SequenceNode:
		out := make([]string, len(v.Values))
		for i, item := range v.Values {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.mark(p, item)
			d.str(item, p, &out[i])
		}
		*dst = out
	default:
		d.fail(n, path, "want a list of strings, got %s", kindOf(n))
	}
}

func (d *decoder) strMap(n ast.Node, path string, dst *map[string]string) {
	n = d.unwrap(n)
	var pairs []*ast.MappingValueNode
	switch m := n.(type) {
	case *ast.NullNode:
		return
	case *ast.MappingNode:
		pairs = m.Values
	case *ast.MappingValueNode:
		pairs = []*ast.MappingValueNode{m}
	default:
		d.fail(n, path, "want a mapping of strings to strings, got %s", kindOf(n))
		return
	}
	out := map[string]string{}
	for _, kv := range pairs {
		k := keyString(kv.Key)
		p := path + "." + k
		if _, dup := out[k]; dup {
			d.fail(kv.Key, p, "is given twice: give each key once")
			continue
		}
		if d.cur != nil {
			d.cur.pos["key:"+path+"."+k] = d.at(kv.Key)
		}
		d.mark(p, kv.Value)
		var v string
		d.str(kv.Value, p, &v)
		out[k] = v
	}
	*dst = out
}

// size reads a size: a number of bytes, or a string such as "10GiB".
func (d *decoder) size(n ast.Node, path string, dst *int64) {
	n = d.unwrap(n)
	switch v := n.(type) {
	case *ast.IntegerNode:
		switch x := v.Value.(type) {
		case int64:
			*dst = x
		case uint64:
			if x > math.MaxInt64 {
				d.fail(n, path, "%d is too large", x)
				return
			}
			*dst = int64(x)
		}
	case *ast.StringNode:
		b, err := bytesize.Parse(v.Value)
		if err != nil {
			d.fail(n, path, "%s", err)
			return
		}
		*dst = b
	case *ast.NullNode:
		*dst = 0
	default:
		d.fail(n, path, "want a size (a number of bytes, or e.g. \"10GiB\"), got %s", kindOf(n))
	}
}

// object decodes one document (or one element of a JSON array, at index).
func (d *decoder) object(n ast.Node, index string) {
	n = d.unwrap(n)
	start := d.at(n)
	if _, ok := n.(*ast.MappingNode); !ok {
		if _, ok := n.(*ast.MappingValueNode); !ok {
			d.fail(n, index, "want an object (a mapping with apiVersion, kind, metadata and spec), got %s", kindOf(n))
			return
		}
	}
	// First pass: apiVersion and kind decide how to read the rest.
	var apiVersion, kind string
	var kindNode, versionNode ast.Node
	for _, kv := range pairs(n) {
		switch keyString(kv.Key) {
		case "apiVersion":
			versionNode = kv.Value
			d.str(kv.Value, "apiVersion", &apiVersion)
		case "kind":
			kindNode = kv.Value
			d.str(kv.Value, "kind", &kind)
		}
	}
	switch {
	case versionNode == nil:
		d.fail(n, "apiVersion", "is required: apiVersion: %s", APIVersion)
		return
	case apiVersion != APIVersion:
		d.fail(versionNode, "apiVersion", "%q is not supported: use %s", apiVersion, APIVersion)
		return
	case kindNode == nil:
		d.fail(n, "kind", "is required: Node or Image")
		return
	case kind != KindNode && kind != KindImage:
		hint := ""
		if s := suggest(kind, []string{KindNode, KindImage}); s != "" {
			hint = fmt.Sprintf(" (did you mean %q?)", s)
		}
		d.fail(kindNode, "kind", "%q is not a kind sanboot knows: use Node or Image%s", kind, hint)
		return
	}
	o := &Object{Kind: kind, Pos: start, pos: map[string]Position{}}
	d.cur, d.curRef = o, ""
	defer func() { d.cur, d.curRef = nil, "" }()
	// The name first, so that every later message names the object.
	for _, kv := range pairs(n) {
		if keyString(kv.Key) != "metadata" {
			continue
		}
		for _, m := range pairs(d.unwrap(kv.Value)) {
			if keyString(m.Key) == "name" {
				if s, ok := d.unwrap(m.Value).(*ast.StringNode); ok && s.Value != "" {
					d.curRef = strings.ToLower(kind) + "/" + s.Value
				}
			}
		}
	}
	meta := &sanbootv1.ObjectMeta{}
	var hasMeta, hasSpec bool
	fields := []field{
		{"apiVersion", nil}, {"kind", nil},
		{"metadata", func(v ast.Node, p string) { hasMeta = true; d.meta(v, p, meta) }},
		{"status", nil},
	}
	switch kind {
	case KindNode:
		spec := &sanbootv1.NodeSpec{}
		o.Node = &sanbootv1.Node{Metadata: meta, Spec: spec}
		fields = append(fields, field{"spec", func(v ast.Node, p string) { hasSpec = true; d.nodeSpec(v, p, spec) }})
	case KindImage:
		spec := &sanbootv1.ImageSpec{}
		o.Image = &sanbootv1.Image{Metadata: meta, Spec: spec}
		fields = append(fields, field{"spec", func(v ast.Node, p string) { hasSpec = true; d.imageSpec(v, p, spec, o) }})
	}
	before := len(d.errs)
	d.mapping(n, "", fields)
	if !hasMeta {
		d.fail(n, "metadata", "is required: it holds the name")
	}
	if !hasSpec {
		d.fail(n, "spec", "is required")
	}
	if meta.Project == "" {
		meta.Project = d.project
	}
	if len(d.errs) == before {
		d.objs = append(d.objs, o)
	} else {
		d.broken = append(d.broken, o) // still validated, for the other fields' sake
	}
}

func pairs(n ast.Node) []*ast.MappingValueNode {
	switch m := n.(type) {
	case *ast.MappingNode:
		return m.Values
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{m}
	}
	return nil
}

func (d *decoder) meta(n ast.Node, path string, m *sanbootv1.ObjectMeta) {
	d.mapping(n, path, []field{
		{"name", func(v ast.Node, p string) { d.str(v, p, &m.Name) }},
		{"project", func(v ast.Node, p string) { d.str(v, p, &m.Project) }},
		{"labels", func(v ast.Node, p string) { d.strMap(v, p, &m.Labels) }},
		{"generation", nil}, {"createTime", nil}, {"deleteTime", nil}, {"revision", nil}, {"uid", nil},
	})
}

func (d *decoder) nodeSpec(n ast.Node, path string, s *sanbootv1.NodeSpec) {
	d.mapping(n, path, []field{
		{"image", func(v ast.Node, p string) { d.str(v, p, &s.Image) }},
		{"initiatorIqn", func(v ast.Node, p string) { d.str(v, p, &s.InitiatorIqn) }},
		{"macs", func(v ast.Node, p string) { d.strList(v, p, &s.Macs) }},
		{"agent", func(v ast.Node, p string) { d.str(v, p, &s.Agent) }},
		{"chap", func(v ast.Node, p string) { d.boolean(v, p, &s.Chap) }},
		{"mutualChap", func(v ast.Node, p string) { d.boolean(v, p, &s.MutualChap) }},
		{"keepDisk", func(v ast.Node, p string) { d.boolean(v, p, &s.KeepDisk) }},
	})
}

func (d *decoder) imageSpec(n ast.Node, path string, s *sanbootv1.ImageSpec, o *Object) {
	d.mapping(n, path, []field{
		{"sizeBytes", func(v ast.Node, p string) { d.size(v, p, &s.SizeBytes) }},
		{"protected", func(v ast.Node, p string) { d.boolean(v, p, &s.Protected) }},
		{"source", func(v ast.Node, p string) { d.source(v, p, s, o) }},
		{"agents", func(v ast.Node, p string) { d.strList(v, p, &s.Agents) }},
		{"description", func(v ast.Node, p string) { d.str(v, p, &s.Description) }},
		{"efiBootPath", func(v ast.Node, p string) { d.str(v, p, &s.EfiBootPath) }},
		{"parent", nil},
	})
	if o.File != "" && s.SizeBytes == 0 {
		// The upload tells the size; validation needs one meanwhile.
		s.SizeBytes = 512
		o.SizeFromFile = true
	}
}

// source reads spec.source: exactly one of blank, url, snapshot, copy,
// upload, or file (a path apply uploads).
func (d *decoder) source(n ast.Node, path string, s *sanbootv1.ImageSpec, o *Object) {
	var kinds []string
	var src sanbootv1.ImageSource
	one := func(name string, f func(v ast.Node, p string)) field {
		return field{name, func(v ast.Node, p string) { kinds = append(kinds, name); f(v, p) }}
	}
	ok := d.mapping(n, path, []field{
		one("blank", func(v ast.Node, p string) {
			d.mapping(v, p, nil)
			src.Kind = &sanbootv1.ImageSource_Blank{Blank: &sanbootv1.BlankSource{}}
		}),
		one("url", func(v ast.Node, p string) {
			u := &sanbootv1.URLSource{}
			d.mapping(v, p, []field{
				{"url", func(v ast.Node, p string) { d.str(v, p, &u.Url) }},
				{"sha256", func(v ast.Node, p string) { d.str(v, p, &u.Sha256) }},
			})
			src.Kind = &sanbootv1.ImageSource_Url{Url: u}
		}),
		one("snapshot", func(v ast.Node, p string) {
			sn := &sanbootv1.SnapshotSource{}
			d.mapping(v, p, []field{{"node", func(v ast.Node, p string) { d.str(v, p, &sn.Node) }}})
			src.Kind = &sanbootv1.ImageSource_Snapshot{Snapshot: sn}
		}),
		one("copy", func(v ast.Node, p string) {
			c := &sanbootv1.CopySource{}
			d.mapping(v, p, []field{{"image", func(v ast.Node, p string) { d.str(v, p, &c.Image) }}})
			src.Kind = &sanbootv1.ImageSource_Copy{Copy: c}
		}),
		one("upload", func(v ast.Node, p string) {
			u := &sanbootv1.UploadSource{}
			d.mapping(v, p, []field{
				{"uploadId", func(v ast.Node, p string) { d.str(v, p, &u.UploadId) }},
				{"sha256", func(v ast.Node, p string) { d.str(v, p, &u.Sha256) }},
				{"member", func(v ast.Node, p string) { d.str(v, p, &u.Member) }},
			})
			src.Kind = &sanbootv1.ImageSource_Upload{Upload: u}
		}),
		one("file", func(v ast.Node, p string) {
			var f string
			d.str(v, p, &f)
			if f == "" {
				d.fail(v, p, "is required: the path of a raw or qcow2 disk image, relative to this file")
				return
			}
			if !filepath.IsAbs(f) {
				f = filepath.Join(d.dir, f)
			}
			fi, err := os.Stat(f)
			switch {
			case err != nil:
				d.fail(v, p, "cannot read %s: %v", f, err)
				return
			case !fi.Mode().IsRegular():
				d.fail(v, p, "%s is not a regular file", f)
				return
			}
			o.File = f
			// Until apply uploads it; the zeros are never sent.
			src.Kind = &sanbootv1.ImageSource_Upload{Upload: &sanbootv1.UploadSource{UploadId: UploadPlaceholder, Sha256: strings.Repeat("0", 64)}}
		}),
	})
	if !ok {
		return
	}
	switch len(kinds) {
	case 0:
		d.fail(n, path, "give one of blank, url, snapshot, copy, upload or file")
	case 1:
		s.Source = &src
	default:
		d.fail(n, path, "has %s: give exactly one source", strings.Join(kinds, " and "))
	}
}

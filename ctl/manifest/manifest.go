package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// APIVersion is the apiVersion every document carries.
const APIVersion = "sanboot.io/v1"

// Kinds of objects.
const (
	KindNode  = "Node"
	KindImage = "Image"
)

// Stdin is the path that means standard input.
const Stdin = "-"

// Position is where something is in an input.
type Position struct {
	File   string
	Line   int
	Column int
}

func (p Position) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// Object is one decoded and validated document.
type Object struct {
	Kind string
	// Node or Image is set, by Kind. Metadata.Project is never empty.
	Node  *sanbootv1.Node
	Image *sanbootv1.Image
	// File is spec.source.file of an Image made absolute: the file apply
	// uploads. The image's Source is then an upload placeholder that the
	// caller replaces once the bytes are uploaded.
	File string
	// SizeFromFile: spec.sizeBytes was not given; the upload tells it.
	SizeFromFile bool
	// Pos is where the document starts.
	Pos Position
	pos map[string]Position
	// failed are the paths that had decode errors: validation says
	// nothing more about them.
	failed []string
}

// Meta returns the object's metadata.
func (o *Object) Meta() *sanbootv1.ObjectMeta {
	if o.Node != nil {
		return o.Node.GetMetadata()
	}
	return o.Image.GetMetadata()
}

// Ref is "node/NAME" or "image/NAME".
func (o *Object) Ref() string {
	return strings.ToLower(o.Kind) + "/" + o.Meta().GetName()
}

// PositionOf returns where the field at path (as in api.FieldError, e.g.
// "spec.macs[1]") was, or the nearest enclosing field that was there.
func (o *Object) PositionOf(path string) Position {
	for p := path; p != ""; p = parent(p) {
		if pos, ok := o.pos[p]; ok {
			return pos
		}
	}
	return o.Pos
}

// UploadPlaceholder is the upload id the Source of an Image with a File
// holds until the file is uploaded.
const UploadPlaceholder = "pending-upload"

// parent strips the last segment of a field path.
func parent(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i <= 0 {
		return ""
	}
	return p[:i]
}

// Error is one problem in an input.
type Error struct {
	Pos    Position
	Object string // "node/NAME", when known
	Err    error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Pos.String())
	b.WriteString(": ")
	if e.Object != "" {
		b.WriteString(e.Object)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Input says what to read.
type Input struct {
	// Paths are files, directories (their *.yaml, *.yml and *.json files,
	// not recursively, in name order) or Stdin.
	Paths []string
	Stdin io.Reader
	// Project is the project of documents that name none.
	Project string
	// Validate runs api.ValidateNode/ValidateImage on each object (apply,
	// diff). Without it only the structure is checked (delete -f).
	Validate bool
}

// Load reads, decodes and validates every document of in. It returns all
// objects, or every problem found (errors.Join of *Error) and no objects.
func Load(in Input) ([]*Object, error) {
	if len(in.Paths) == 0 {
		return nil, errors.New("no files given: use -f FILE, -f DIR or -f - (standard input)")
	}
	var objs []*Object
	var errs []error
	budget := int64(MaxTotalBytes)
	for _, p := range in.Paths {
		files, err := expand(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range files {
			data, name, dir, err := read(f, in.Stdin, min(MaxFileBytes, budget))
			if err != nil {
				errs = append(errs, err)
				if budget < MaxFileBytes {
					errs = append(errs, fmt.Errorf("the files given hold more than %d MiB in all, the most one command reads: apply them in several commands", MaxTotalBytes>>20))
					return nil, errors.Join(errs...)
				}
				continue
			}
			budget -= int64(len(data))
			o, err := Decode(data, name, dir, in.Project, in.Validate)
			objs = append(objs, o...)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, duplicates(objs)...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return objs, nil
}

func expand(p string) ([]string, error) {
	if p == Stdin {
		return []string{p}, nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s does not exist: give a file, a directory or - (standard input)", p)
		}
		return nil, err
	}
	if !fi.IsDir() {
		return []string{p}, nil
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s has no .yaml, .yml or .json files", p)
	}
	return files, nil
}

func read(p string, stdin io.Reader, limit int64) (data []byte, name, dir string, err error) {
	if p == Stdin {
		if stdin == nil {
			stdin = strings.NewReader("")
		}
		data, err = readBounded(stdin, "<stdin>", limit)
		if err != nil {
			return nil, "", "", err
		}
		wd, _ := os.Getwd()
		return data, "<stdin>", wd, nil
	}
	data, err = readFile(p, limit)
	if err != nil {
		return nil, "", "", err
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, "", "", err
	}
	return data, p, filepath.Dir(abs), nil
}

// Decode decodes the documents in data (named name in messages; relative
// spec.source.file paths are relative to dir).
func Decode(data []byte, name, dir, project string, validate bool) ([]*Object, error) {
	if len(data) > MaxFileBytes {
		return nil, tooBig(name, MaxFileBytes)
	}
	if err := checkShape(data, name); err != nil {
		return nil, err
	}
	d := &decoder{file: name, dir: dir, project: project, anchors: map[string]ast.Node{}}
	for window := range slices.Chunk(documents(data), partsAtOnce) {
		files, errs := parseAll(window)
		for k, part := range window {
			if errs[k] != nil {
				return nil, syntaxError(name, errs[k], part.lines)
			}
			d.lines = part.lines
			for _, doc := range files[k].Docs {
				body := d.unwrap(doc.Body)
				if body == nil || isNull(body) {
					continue // an empty document (comments only, or a trailing ---)
				}
				if seq, ok := body.(*ast.SequenceNode); ok { // a JSON array of objects
					for i, item := range seq.Values {
						d.object(item, fmt.Sprintf("[%d]", i))
					}
					continue
				}
				d.object(body, "")
			}
		}
	}
	if validate {
		for _, o := range d.objs {
			d.validate(o)
		}
		for _, o := range d.broken {
			d.validate(o)
		}
	}
	// In file order, whichever check found them.
	slices.SortStableFunc(d.errs, func(a, b error) int {
		pa, pb := errPos(a), errPos(b)
		if pa.Line != pb.Line {
			return pa.Line - pb.Line
		}
		return pa.Column - pb.Column
	})
	if err := errors.Join(d.errs...); err != nil {
		return nil, err
	}
	return d.objs, nil
}

// partsAtOnce is how many parts (documents) Decode parses at once, on
// every core, before decoding them in order: the parser is most of a
// large manifest's cost, which the commands pay before writing anything,
// and the window bounds the syntax trees held at once.
const partsAtOnce = 256

// parseAll parses each of parts, on as many goroutines as there are
// cores (GOMAXPROCS).
func parseAll(parts []part) ([]*ast.File, []error) {
	files, errs := make([]*ast.File, len(parts)), make([]error, len(parts))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(parts)) {
		wg.Go(func() {
			for k := int(next.Add(1) - 1); k < len(parts); k = int(next.Add(1) - 1) {
				files[k], errs[k] = parser.ParseBytes(parts[k].data, 0)
			}
		})
	}
	wg.Wait()
	return files, errs
}

// part is a piece of an input that holds whole YAML documents, and how
// many lines of the input come before it.
type part struct {
	data  []byte
	lines int
}

// documents cuts data before each document start marker (a line that is
// "---", or starts with "--- "), so that each document is parsed on its
// own: the parser's cost grows faster than the size of what it parses (a
// file of 10,000 documents took four times as long, and four times the
// memory, parsed whole). YAML forbids such a line inside a document's
// content, so the cut changes nothing, except with directives (a line
// starting with %), which belong to the document after them: such a file
// is parsed whole.
func documents(data []byte) []part {
	if bytes.HasPrefix(data, []byte("%")) || bytes.Contains(data, []byte("\n%")) {
		return []part{{data: data}}
	}
	var parts []part
	start, lines, startLines := 0, 0, 0
	for i := 0; i < len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		if end < 0 {
			end = len(data) - i
		}
		line := data[i : i+end]
		if i > start && (string(bytes.TrimRight(line, "\r")) == "---" || bytes.HasPrefix(line, []byte("--- ")) || bytes.HasPrefix(line, []byte("---\t"))) {
			parts = append(parts, part{data: data[start:i], lines: startLines})
			start, startLines = i, lines
		}
		i += end + 1
		lines++
	}
	return append(parts, part{data: data[start:], lines: startLines})
}

func syntaxError(name string, err error, lines int) error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		pos := Position{File: name}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			pos.Line, pos.Column = lines+tk.Position.Line, tk.Position.Column
		}
		return &Error{Pos: pos, Err: fmt.Errorf("not valid YAML or JSON: %s", ye.GetMessage())}
	}
	return &Error{Pos: Position{File: name}, Err: fmt.Errorf("not valid YAML or JSON: %w", err)}
}

// duplicates reports objects given twice.
func duplicates(objs []*Object) []error {
	var errs []error
	seen := map[string]*Object{}
	for _, o := range objs {
		k := o.Kind + "/" + o.Meta().GetProject() + "/" + o.Meta().GetName()
		if first, ok := seen[k]; ok {
			errs = append(errs, &Error{Pos: o.PositionOf("metadata.name"), Object: o.Ref(),
				Err: fmt.Errorf("is also defined at %s in project %q: define each object once", first.PositionOf("metadata.name"), o.Meta().GetProject())})
			continue
		}
		seen[k] = o
	}
	return errs
}

// validate runs the API's checks on o and places their errors.
func (d *decoder) validate(o *Object) {
	var err error
	if o.Node != nil {
		err = api.ValidateNode(o.Node)
	} else {
		err = api.ValidateImage(o.Image)
	}
	for _, e := range flatten(err) {
		pos := o.Pos
		var fe *api.FieldError
		if errors.As(e, &fe) && o.overlapsFailed(fe.Field) {
			continue // its value was not read: the decode error says why
		}
		if errors.As(e, &fe) {
			pos = o.PositionOf(fe.Field)
			if p, ok := o.pos["key:"+fe.Field+"."+fe.Value]; ok { // a bad label key
				pos = p
			}
		}
		ref := ""
		if o.Meta().GetName() != "" {
			ref = o.Ref()
		}
		d.errs = append(d.errs, &Error{Pos: pos, Object: ref, Err: e})
	}
}

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Sort orders objects the way apply writes them: images that need nothing
// else, then copies of images, then nodes, then snapshots of nodes; in
// input order within each group.
func Sort(objs []*Object) []*Object {
	rank := func(o *Object) int {
		if o.Node != nil {
			return 2
		}
		switch o.Image.GetSpec().GetSource().GetKind().(type) {
		case *sanbootv1.ImageSource_Copy:
			return 1
		case *sanbootv1.ImageSource_Snapshot:
			return 3
		}
		return 0
	}
	out := slices.Clone(objs)
	slices.SortStableFunc(out, func(a, b *Object) int { return rank(a) - rank(b) })
	return out
}

// overlapsFailed says whether field is, contains or lies within a path
// that had a decode error.
func (o *Object) overlapsFailed(field string) bool {
	within := func(a, b string) bool { // a is b or lies below it
		return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(a, b+"[")
	}
	for _, p := range o.failed {
		if p == "" || within(field, p) || within(p, field) {
			return true
		}
	}
	return false
}

func errPos(err error) Position {
	var e *Error
	if errors.As(err, &e) {
		return e.Pos
	}
	return Position{}
}

package daemon

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// ConfigFlag is the name of the flag that names the configuration file.
const ConfigFlag = "config"

// Repeatable is implemented by a flag.Value that is given once per value
// (e.g. --portal A --portal B). In the configuration file such a flag takes
// a YAML list, whose items are Set one by one; a list given to any other
// flag is joined with commas (--etcd-endpoints a,b).
type Repeatable interface {
	flag.Value
	Repeatable() bool
}

// Parse parses args into fs, then, if --config names a file, reads the
// settings the command line did not give from it (see LoadFile).
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return loadConfig(fs)
}

// ParseArgs is Parse for a command that takes arguments besides its flags
// (restore SNAPSHOT): flags may come before and after the arguments, as
// with sanbootctl, and "--" ends the flags. It returns the arguments.
func ParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			operands = append(operands, rest...)
			break
		}
		operands = append(operands, rest[0])
		args = rest[1:]
	}
	return operands, loadConfig(fs)
}

// loadConfig reads the file --config names, if any, into the flags that
// the command line did not set.
func loadConfig(fs *flag.FlagSet) error {
	f := fs.Lookup(ConfigFlag)
	if f == nil || f.Value.String() == "" {
		return nil
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	return LoadFile(fs, f.Value.String(), given)
}

// LoadFile reads the YAML mapping in path and sets each of its keys as the
// flag of that name in fs, skipping the flags in given (the command line
// wins). Every wrong key or value is reported as path:line: ..., all of
// them at once.
func LoadFile(fs *flag.FlagSet, path string, given map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--%s: %w", ConfigFlag, err)
	}
	// A file with some wrong lines still has its good ones applied, so
	// that every mistake is reported at once.
	settings, err := parseSettings(path, data)
	errs := []error{err}
	for _, s := range settings {
		if err := s.apply(fs, given); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", path, s.line, err))
		}
	}
	return errors.Join(errs...)
}

// setting is one key of the file.
type setting struct {
	key    string
	line   int
	values []string
	list   bool
}

func (s setting) apply(fs *flag.FlagSet, given map[string]bool) error {
	if s.key == ConfigFlag {
		return fmt.Errorf("%q cannot be set in a configuration file", s.key)
	}
	f := fs.Lookup(s.key)
	if f == nil {
		return fmt.Errorf("unknown setting %q: %s has no flag --%s (see --help; keys are flag names without dashes)", s.key, fs.Name(), s.key)
	}
	if given[s.key] {
		return nil
	}
	if r, ok := f.Value.(Repeatable); ok && r.Repeatable() {
		for _, v := range s.values {
			if err := fs.Set(s.key, v); err != nil {
				return fmt.Errorf("%s: %q: %w", s.key, v, err)
			}
		}
		return nil
	}
	v := strings.Join(s.values, ",")
	if err := fs.Set(s.key, v); err != nil {
		return fmt.Errorf("%s: %q: %w%s", s.key, v, err, hint(f))
	}
	return nil
}

// hint says what a flag of a basic type takes (the flag package says only
// "parse error").
func hint(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return ": use a duration such as 30s, 5m or 24h"
	case bool:
		return ": use true or false"
	case int, int64, uint, uint64:
		return ": use a whole number"
	case float64:
		return ": use a number"
	}
	return ""
}

// parseSettings reads a YAML document that is one mapping of names to
// scalars or lists of scalars. An empty file has no settings.
func parseSettings(path string, data []byte) ([]setting, error) {
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		var se *yaml.SyntaxError
		if errors.As(err, &se) && se.GetToken() != nil {
			return nil, fmt.Errorf("%s:%d: not valid YAML: %s", path, se.GetToken().Position.Line, se.GetMessage())
		}
		return nil, fmt.Errorf("%s: not valid YAML: %w", path, err)
	}
	var body ast.Node
	for _, doc := range file.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, ok := doc.Body.(*ast.CommentNode); ok {
			continue
		}
		if body != nil {
			return nil, fmt.Errorf("%s:%d: a second YAML document: put every setting in one", path, line(doc.Body))
		}
		body = doc.Body
	}
	if body == nil {
		return nil, nil
	}
	m, ok := body.(*ast.MappingNode)
	if !ok {
		if mv, ok1 := body.(*ast.MappingValueNode); ok1 { // a mapping of one key
			m = &ast.MappingNode{Values: []*ast.MappingValueNode{mv}}
		} else {
			return nil, fmt.Errorf("%s:%d: expected a mapping of setting names to values (name: value), got %s", path, line(body), body.Type())
		}
	}
	var (
		out  []setting
		errs []error
		seen = map[string]int{}
	)
	for _, mv := range m.Values {
		k, ok := mv.Key.(ast.ScalarNode)
		ln := line(mv.Key)
		if !ok {
			errs = append(errs, fmt.Errorf("%s:%d: a setting's name must be a plain word", path, ln))
			continue
		}
		key := fmt.Sprint(k.GetValue())
		if prev, dup := seen[key]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: %q is set twice (also on line %d)", path, ln, key, prev))
			continue
		}
		seen[key] = ln
		s := setting{key: key, line: ln}
		switch v := mv.Value.(type) {
		case *ast.SequenceNode:
			s.list = true
			for _, item := range v.Values {
				str, err := scalar(item)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s:%d: %s: %w", path, line(item), key, err))
					continue
				}
				s.values = append(s.values, str)
			}
		default:
			str, err := scalar(mv.Value)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %s: %w", path, ln, key, err))
				continue
			}
			s.values = []string{str}
		}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}

func scalar(n ast.Node) (string, error) {
	switch v := n.(type) {
	case nil, *ast.NullNode:
		return "", errors.New("has no value: give one, or remove the line to keep the default")
	case *ast.StringNode:
		return v.Value, nil
	case ast.ScalarNode:
		return v.GetToken().Value, nil
	default:
		return "", fmt.Errorf("expected a single value or a list of values, got %s", n.Type())
	}
}

func line(n ast.Node) int {
	if n == nil || n.GetToken() == nil {
		return 0
	}
	return n.GetToken().Position.Line
}

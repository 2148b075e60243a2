package printers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// A small JSONPath template language, the part of kubectl's that scripts
// use: text with {actions}. An action is a path ({.status.phase},
// {.nodes[0].metadata.name}, {.nodes[*].metadata.name}), a string literal
// ({"\n"}), or {range PATH} ... {end}, which repeats its body for every
// value of PATH with that value as the current object. Several values print
// separated by spaces; strings print bare, other values as JSON. The
// document is the one -o json prints.

type jpNode struct {
	text  string   // literal text (kind 't')
	path  []string // a path (kind 'p') or the range's path (kind 'r')
	kind  byte
	body  []jpNode // kind 'r'
	input string   // the action as written, for messages
}

// parseJSONPath parses a template.
func parseJSONPath(tmpl string) ([]jpNode, error) {
	nodes, rest, err := parseJP(tmpl, false)
	if err != nil {
		return nil, err
	}
	if rest != "" {
		return nil, fmt.Errorf("jsonpath %q: {end} without {range}", tmpl)
	}
	return nodes, nil
}

func parseJP(s string, inRange bool) ([]jpNode, string, error) {
	var out []jpNode
	for s != "" {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			out = append(out, jpNode{kind: 't', text: s})
			return out, "", nil
		}
		if i > 0 {
			out = append(out, jpNode{kind: 't', text: s[:i]})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return nil, "", fmt.Errorf("jsonpath: %q has no closing }", s[i:])
		}
		action := strings.TrimSpace(s[i+1 : i+j])
		s = s[i+j+1:]
		switch {
		case action == "end":
			if !inRange {
				return nil, "", fmt.Errorf("jsonpath: {end} without {range}")
			}
			return out, s, nil
		case strings.HasPrefix(action, "range "):
			p, err := parsePath(strings.TrimSpace(strings.TrimPrefix(action, "range ")))
			if err != nil {
				return nil, "", err
			}
			body, rest, err := parseJP(s, true)
			if err != nil {
				return nil, "", err
			}
			out = append(out, jpNode{kind: 'r', path: p, body: body, input: action})
			s = rest
		case strings.HasPrefix(action, `"`):
			lit, err := strconv.Unquote(action)
			if err != nil {
				return nil, "", fmt.Errorf("jsonpath: bad string literal %s", action)
			}
			out = append(out, jpNode{kind: 't', text: lit})
		default:
			p, err := parsePath(action)
			if err != nil {
				return nil, "", err
			}
			out = append(out, jpNode{kind: 'p', path: p, input: action})
		}
	}
	if inRange {
		return nil, "", fmt.Errorf("jsonpath: {range} has no {end}")
	}
	return out, "", nil
}

// parsePath splits ".a.b[0][*]" (or "$.a", or "@.a") into ".a", ".b", "[0]", "[*]".
func parsePath(p string) ([]string, error) {
	p = strings.TrimPrefix(strings.TrimPrefix(p, "$"), "@")
	if p == "" || p == "." {
		return nil, nil
	}
	if p[0] != '.' && p[0] != '[' {
		return nil, fmt.Errorf("jsonpath: %q is not a path: start it with a dot, e.g. {.metadata.name}", p)
	}
	var segs []string
	for p != "" {
		switch p[0] {
		case '.':
			k := strings.IndexAny(p[1:], ".[")
			if k < 0 {
				k = len(p) - 1
			}
			name := p[1 : k+1]
			if name == "" {
				return nil, fmt.Errorf("jsonpath: empty field name in %q", p)
			}
			segs = append(segs, "."+name)
			p = p[k+1:]
		case '[':
			k := strings.IndexByte(p, ']')
			if k < 0 {
				return nil, fmt.Errorf("jsonpath: %q has no closing ]", p)
			}
			idx := p[1:k]
			if idx != "*" {
				if _, err := strconv.Atoi(idx); err != nil {
					return nil, fmt.Errorf("jsonpath: [%s]: use [N] or [*]", idx)
				}
			}
			segs = append(segs, "["+idx+"]")
			p = p[k+1:]
		default:
			return nil, fmt.Errorf("jsonpath: unexpected %q", p)
		}
	}
	return segs, nil
}

// eval returns the values at path below v.
func eval(v any, path []string) []any {
	cur := []any{v}
	for _, seg := range path {
		var next []any
		for _, c := range cur {
			switch {
			case seg[0] == '.':
				if m, ok := c.(map[string]any); ok {
					if x, ok := m[seg[1:]]; ok {
						next = append(next, x)
					}
				}
			case seg == "[*]":
				switch x := c.(type) {
				case []any:
					next = append(next, x...)
				case map[string]any:
					for _, k := range sortedAnyKeys(x) {
						next = append(next, x[k])
					}
				}
			default:
				i, _ := strconv.Atoi(seg[1 : len(seg)-1])
				if a, ok := c.([]any); ok {
					if i < 0 {
						i += len(a)
					}
					if i >= 0 && i < len(a) {
						next = append(next, a[i])
					}
				}
			}
		}
		cur = next
	}
	return cur
}

func sortedAnyKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func execJSONPath(w io.Writer, nodes []jpNode, v any) error {
	for _, n := range nodes {
		switch n.kind {
		case 't':
			io.WriteString(w, n.text)
		case 'p':
			vals := eval(v, n.path)
			for i, x := range vals {
				if i > 0 {
					io.WriteString(w, " ")
				}
				if err := writeJPValue(w, x); err != nil {
					return err
				}
			}
		case 'r':
			for _, x := range eval(v, n.path) {
				if err := execJSONPath(w, n.body, x); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func writeJPValue(w io.Writer, x any) error {
	switch v := x.(type) {
	case string:
		_, err := io.WriteString(w, v)
		return err
	case json.Number:
		_, err := io.WriteString(w, v.String())
		return err
	}
	b, err := json.Marshal(x)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// jsonPathOut runs the template of format ("jsonpath=...") over doc.
func jsonPathOut(w io.Writer, format string, doc []byte) error {
	nodes, err := parseJSONPath(strings.TrimPrefix(format, FormatJSONPathPrefix))
	if err != nil {
		return &FormatError{err}
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	var out bytes.Buffer
	if err := execJSONPath(&out, nodes, v); err != nil {
		return err
	}
	if !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
		out.WriteByte('\n')
	}
	_, err = w.Write(out.Bytes())
	return err
}

package manifest

import (
	"fmt"
	"io"
	"os"
)

// Limits on what one manifest may cost before it is parsed: a YAML syntax
// tree takes tens of times its input in memory, and more still when nested
// deeply, so input is measured while it is read and scanned for nesting
// before anything large is built.
const (
	// MaxFileBytes is the most one manifest file (or standard input) may
	// hold; split larger ones into several files of a directory (-f DIR).
	MaxFileBytes = 8 << 20
	// MaxTotalBytes is the most all the files of one command may hold.
	MaxTotalBytes = 32 << 20
	// MaxDepth bounds the nesting of flow collections ([...], {...}) and of
	// compact block sequences ("- - -") on one line; sanboot's objects
	// nest five levels.
	MaxDepth = 64
	// MaxIndent bounds a line's indentation (columns), which bounds the
	// nesting of block collections.
	MaxIndent = 256
	// MaxAliases bounds how many aliases (*name) one file may use, so that
	// aliases cannot multiply what a small file decodes to.
	MaxAliases = 1024
)

// readBounded reads r, named name, refusing more than limit bytes without
// reading much past it.
func readBounded(r io.Reader, name string, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, tooBig(name, limit)
	}
	return data, nil
}

func tooBig(name string, limit int64) error {
	return &Error{Pos: Position{File: name}, Err: fmt.Errorf("is larger than %d MiB, the most one manifest may be: "+
		"split it into several files in a directory and apply the directory (-f DIR)", limit>>20)}
}

// readFile reads the file p, refusing it by its size before reading when
// it exceeds limit.
func readFile(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > limit {
		return nil, tooBig(p, limit)
	}
	return readBounded(f, p, limit)
}

// checkShape scans data, without building anything, and refuses nesting
// deeper than MaxDepth, indentation beyond MaxIndent and more than
// MaxAliases aliases. It knows enough YAML to skip quoted scalars, block
// scalars (| and >) and comments, so that brackets in text do not count.
func checkShape(data []byte, name string) error {
	fail := func(line, col int, format string, a ...any) error {
		return &Error{Pos: Position{File: name, Line: line, Column: col}, Err: fmt.Errorf(format, a...)}
	}
	var (
		line, col   = 1, 0
		flow        int // depth of [ and {
		compact     int // "- " and "? " on this line before its content
		indent      int // this line's indentation
		lineStart   = true
		atValue     = true // a value may start here
		aliases     int
		blockParent = -1 // indentation of the line that started a block scalar, -1 when none
		prevSpace   = true
	)
	for i := 0; i < len(data); i++ {
		c := data[i]
		col++
		if c == '\n' {
			line, col, lineStart, atValue, compact, indent, prevSpace = line+1, 0, true, true, 0, 0, true
			continue
		}
		if lineStart {
			if c == ' ' {
				indent++
				if indent > MaxIndent {
					return fail(line, col, "is indented more than %d columns: sanboot manifests nest a few levels deep", MaxIndent)
				}
				continue
			}
			if blockParent >= 0 {
				if c == '\r' || c == '\t' || indent > blockParent {
					// A line of the block scalar (or blank): skip it.
					for i < len(data) && data[i] != '\n' {
						i++
					}
					i--
					lineStart = false
					continue
				}
				blockParent = -1
			}
			lineStart = false
		}
		switch {
		case c == '#' && prevSpace:
			for i < len(data) && data[i] != '\n' {
				i++
			}
			i--
			continue
		case atValue && (c == '"' || c == '\''):
			// A quoted scalar, which may span lines.
			for i++; i < len(data); i++ {
				d := data[i]
				if d == '\n' {
					line, col = line+1, 0
					continue
				}
				col++
				if c == '"' && d == '\\' {
					i++
					col++
					continue
				}
				if d == c {
					if c == '\'' && i+1 < len(data) && data[i+1] == '\'' { // '' is a quote
						i++
						col++
						continue
					}
					break
				}
			}
			atValue = false
		case atValue && (c == '[' || c == '{'):
			flow++
			if flow+compact > MaxDepth {
				return fail(line, col, "nests more than %d levels deep: sanboot manifests nest a few levels", MaxDepth)
			}
		case flow > 0 && (c == ']' || c == '}'):
			flow--
			atValue = false
		case flow > 0 && c == ',':
			atValue = true
		case atValue && flow == 0 && (c == '|' || c == '>'):
			blockParent = indent
			for i < len(data) && data[i] != '\n' {
				i++
			}
			i--
		case atValue && flow == 0 && (c == '-' || c == '?') && (i+1 == len(data) || data[i+1] == ' ' || data[i+1] == '\n'):
			compact++
			if flow+compact > MaxDepth {
				return fail(line, col, "nests more than %d levels deep: sanboot manifests nest a few levels", MaxDepth)
			}
		case c == ':' && (i+1 == len(data) || data[i+1] == ' ' || data[i+1] == '\n' || flow > 0):
			atValue = true
		case atValue && c == '*':
			aliases++
			if aliases > MaxAliases {
				return fail(line, col, "uses more than %d aliases (*name)", MaxAliases)
			}
			atValue = false
		case c == ' ' || c == '\t' || c == '\r':
		default:
			atValue = false
		}
		prevSpace = c == ' ' || c == '\t'
	}
	return nil
}

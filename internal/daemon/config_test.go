package daemon

import (
	"flag"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }
func (l *list) Repeatable() bool   { return true }

type settings struct {
	config, name, endpoints string
	workers                 int
	verbose                 bool
	timeout                 time.Duration
	portals                 list
}

func newFlags(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("test-daemon", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&s.config, ConfigFlag, "", "")
	fs.StringVar(&s.name, "name", "default", "")
	fs.StringVar(&s.endpoints, "etcd-endpoints", "http://127.0.0.1:2379", "")
	fs.IntVar(&s.workers, "workers", 8, "")
	fs.BoolVar(&s.verbose, "verbose", false, "")
	fs.DurationVar(&s.timeout, "timeout", time.Second, "")
	fs.Var(&s.portals, "portal", "")
	return fs
}

func TestParse(t *testing.T) {
	good := filepath.Join("testdata", "good.yaml")
	for _, tc := range []struct {
		name string
		args []string
		want settings
	}{
		{"no file", []string{"--workers=2"}, settings{name: "default", endpoints: "http://127.0.0.1:2379", workers: 2, timeout: time.Second}},
		{"file", []string{"--config", good}, settings{config: good, name: "agent-1", endpoints: "http://127.0.0.1:2379,http://127.0.0.1:22379",
			workers: 4, verbose: true, timeout: 15 * time.Second, portals: list{"127.0.0.1:3260", "[::1]:3260"}}},
		{"flags win", []string{"--config", good, "--workers=16", "--portal=10.0.0.1:3260", "--verbose=false"}, settings{config: good, name: "agent-1",
			endpoints: "http://127.0.0.1:2379,http://127.0.0.1:22379", workers: 16, timeout: 15 * time.Second, portals: list{"10.0.0.1:3260"}}},
		{"empty file", []string{"--config", filepath.Join("testdata", "empty.yaml")}, settings{config: filepath.Join("testdata", "empty.yaml"),
			name: "default", endpoints: "http://127.0.0.1:2379", workers: 8, timeout: time.Second}},
		{"only comments", []string{"--config", filepath.Join("testdata", "comments.yaml")}, settings{config: filepath.Join("testdata", "comments.yaml"),
			name: "default", endpoints: "http://127.0.0.1:2379", workers: 8, timeout: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got settings
			if err := Parse(newFlags(&got), tc.args); err != nil {
				t.Fatal(err)
			}
			if got.config != tc.want.config || got.name != tc.want.name || got.endpoints != tc.want.endpoints || got.workers != tc.want.workers ||
				got.verbose != tc.want.verbose || got.timeout != tc.want.timeout || !slices.Equal(got.portals, tc.want.portals) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	good := filepath.Join("testdata", "good.yaml")
	for _, tc := range []struct {
		name           string
		args, operands []string
		workers        int
		wantName       string
	}{
		{"flags first", []string{"--workers=2", "--name", "n", "snap.db"}, []string{"snap.db"}, 2, "n"},
		{"flags after", []string{"snap.db", "--workers=2", "--name", "n"}, []string{"snap.db"}, 2, "n"},
		{"both sides", []string{"--workers", "2", "a", "--name=n", "b"}, []string{"a", "b"}, 2, "n"},
		{"config after", []string{"snap.db", "--config", good}, []string{"snap.db"}, 4, "agent-1"},
		{"double dash", []string{"--workers=2", "--", "--name", "x"}, []string{"--name", "x"}, 2, "default"},
		{"none", []string{"--workers=3"}, nil, 3, "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got settings
			operands, err := ParseArgs(newFlags(&got), tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(operands, tc.operands) || got.workers != tc.workers || got.name != tc.wantName {
				t.Errorf("got operands %q, workers %d, name %q; want %q, %d, %q", operands, got.workers, got.name, tc.operands, tc.workers, tc.wantName)
			}
		})
	}
	var s settings
	if _, err := ParseArgs(newFlags(&s), []string{"snap.db", "--wrokers=2"}); err == nil || !strings.Contains(err.Error(), "wrokers") {
		t.Errorf("an unknown flag after the file: got %v, want an error naming it", err)
	}
}

func TestParseErrors(t *testing.T) {
	bad := filepath.Join("testdata", "bad.yaml")
	var s settings
	err := Parse(newFlags(&s), []string{"--config", bad})
	if err == nil {
		t.Fatal("a file with wrong keys and values was accepted")
	}
	for _, want := range []string{
		bad + `:2: unknown setting "wrokers"`,
		bad + `:3: timeout: "soon": parse error: use a duration such as 30s, 5m or 24h`,
		bad + `:4: workers: has no value`,
		bad + `:5: portal: expected a single value or a list`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	for _, tc := range []struct{ name, file, want string }{
		{"missing", "testdata/nope.yaml", "no such file"},
		{"not a mapping", "list.yaml", "expected a mapping"},
		{"config in config", "self.yaml", `:1: "config" cannot be set`},
		{"duplicate", "dup.yaml", `dup.yaml:2: not valid YAML: mapping key "name" already defined`},
		{"syntax", "syntax.yaml", "syntax.yaml:1: not valid YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.file
			if !strings.HasPrefix(path, "testdata/") {
				path = filepath.Join(t.TempDir(), tc.file)
				writeFile(t, path, map[string]string{
					"list.yaml":   "- a\n- b\n",
					"self.yaml":   "config: other.yaml\n",
					"dup.yaml":    "name: a\nname: b\n",
					"syntax.yaml": "name: [a\n",
				}[tc.file])
			}
			var s settings
			err := Parse(newFlags(&s), []string{"--config", path})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestNewLogger(t *testing.T) {
	var b strings.Builder
	log, err := NewLogger(&b, LogJSON, "debug")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello", "project", "p", "node", "n")
	if !strings.Contains(b.String(), `"msg":"hello","project":"p","node":"n"`) {
		t.Errorf("json log line: %s", b.String())
	}
	if _, err := NewLogger(&b, "xml", "info"); err == nil {
		t.Error("--log-format=xml accepted")
	}
	if _, err := NewLogger(&b, LogText, "loud"); err == nil {
		t.Error("--log-level=loud accepted")
	}
}

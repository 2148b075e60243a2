package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goodNode is a valid Node document; a case appends lines to its spec or
// replaces parts of it.
const goodNode = `apiVersion: sanboot.io/v1
kind: Node
metadata:
  name: node-40
  labels: {rack: r4}
spec:
  image: debian-13
  macs: ["52:54:00:00:00:40"]
`

// TestBadInput is the table of malformed manifests and flags: each gives
// its exit code and message (file:line:column and field path for manifest
// problems), and afterwards the fake API has received no write at all (no
// PutNode, PutImage, DeleteNode, DeleteImage or UploadImage), because every
// document is checked before anything is applied.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string // bad.yaml (or bad.json when it starts with { or [)
		args    []string
		code    int
		wantErr []string // substrings of stderr
	}{
		// ---- manifest problems: ctl/manifest's TestBadManifests has them all; one shows that
		// apply prints them all, exits 1 and writes nothing
		{"several problems at once", goodNode + "  chap: 1\n  bogus: 2\n", nil, ExitError,
			[]string{"bad.yaml:9:9: node/node-40: spec.chap: want true or false, got a number", "bad.yaml:10:3: node/node-40: spec.bogus: unknown field"}},
		// ---- flags and arguments
		{"apply without -f", "", []string{"apply"}, ExitUsage, []string{`required flag(s) "filename" not set`}},
		{"apply with an argument", goodNode, []string{"apply", "-f", "FILE", "extra"}, ExitUsage, []string{`apply takes files with -f, not arguments (got "extra")`}},
		{"prune without selector", goodNode, []string{"apply", "-f", "FILE", "--prune"}, ExitUsage, []string{"--prune needs -l SELECTOR"}},
		{"dry-run client", goodNode, []string{"apply", "-f", "FILE", "--dry-run=client"}, ExitUsage, []string{"--dry-run=client is not supported: use --dry-run=server"}},
		{"dry-run bogus", goodNode, []string{"apply", "-f", "FILE", "--dry-run=maybe"}, ExitUsage, []string{`--dry-run="maybe": use --dry-run=server`}},
		{"wait with dry-run", goodNode, []string{"apply", "-f", "FILE", "--wait", "--dry-run"}, ExitUsage, []string{"--wait cannot be combined with --dry-run"}},
		{"bad selector", goodNode, []string{"apply", "-f", "FILE", "-l", "a=b=c,!"}, ExitUsage, []string{"label selector"}},
		{"missing file", "", []string{"apply", "-f", "/nonexistent/x.yaml"}, ExitError, []string{"/nonexistent/x.yaml does not exist: give a file, a directory or - (standard input)"}},
		{"empty directory", "", []string{"apply", "-f", "DIR"}, ExitError, []string{"has no .yaml, .yml or .json files"}},
		{"diff without -f", "", []string{"diff"}, ExitUsage, []string{`required flag(s) "filename" not set`}},
		{"diff of a bad file", goodNode + "  chap: 1\n", []string{"diff", "-f", "FILE"}, ExitUsage, []string{"bad.yaml:9:9: node/node-40: spec.chap: want true or false"}},
		{"delete without what", "", []string{"delete"}, ExitUsage, []string{"name what to delete"}},
		{"delete node without names", "", []string{"delete", "node"}, ExitUsage, []string{"name at least one NODE"}},
		// ---- hostile input: refused before it is parsed (ctl/manifest's tests bound the memory)
		{"apply of a 100,000 deep list", deepManifest, []string{"apply", "-f", "FILE"}, ExitError, []string{"bad.yaml:6:", "nests more than 64 levels"}},
		{"diff of a 100,000 deep list", deepManifest, []string{"diff", "-f", "FILE"}, ExitUsage, []string{"bad.yaml:6:", "nests more than 64 levels"}},
		{"delete -f of a 100,000 deep list", deepManifest, []string{"delete", "-f", "FILE"}, ExitError, []string{"bad.yaml:6:", "nests more than 64 levels"}},
		{"delete -f of a bad file", "apiVersion: sanboot.io/v1\nkind: Nod\n", []string{"delete", "-f", "FILE"}, ExitError, []string{`bad.yaml:2:7: kind: "Nod" is not a kind`}},
		{"jsonpath unclosed", "", []string{"get", "nodes", "-o", "jsonpath={.metadata.name"}, ExitUsage, []string{`has no closing }`}},
		{"jsonpath not a path", "", []string{"get", "nodes", "-o", "jsonpath={metadata}"}, ExitUsage, []string{`"metadata" is not a path`}},
		{"watch with names and -A", "", []string{"get", "images", "-w", "-A", "debian-13"}, ExitUsage, []string{"names cannot be combined with --all-projects"}},
		{"wait bogus condition", "", []string{"wait", "node", "node-01", "--for=condition=Happy"}, ExitUsage, []string{"node conditions are Scheduled, AgentAvailable and Ready"}},
		{"config view table", "", []string{"config", "view", "-o", "table"}, ExitUsage, []string{`-o "table": use yaml or json`}},
		{"delete names and selector", "", []string{"delete", "node", "node-01", "-l", "rack=r1"}, ExitUsage, []string{"name nodes or select them with -l, not both"}},
		{"wait bad selector", "", []string{"wait", "node", "-l", "a=b=c,!"}, ExitUsage, []string{"label selector"}},
		{"describe image", "", []string{"describe", "image", "x"}, ExitUsage, []string{`cannot describe "image"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, addr := seededFake(t)
			dir := t.TempDir()
			name := "bad.yaml"
			if strings.HasPrefix(tc.file, "{") || strings.HasPrefix(tc.file, "[") {
				name = "bad.json"
			}
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			args := tc.args
			if args == nil {
				args = []string{"apply", "-f", "FILE"}
			}
			args = append([]string(nil), args...)
			empty := t.TempDir()
			for i, a := range args {
				switch a {
				case "FILE":
					args[i] = name
				case "DIR":
					args[i] = empty
				}
			}
			// Run in dir so that messages name the file as given.
			t.Chdir(dir)
			r := runCLI(t, testCtx(t), nil, append([]string{"--endpoints", addr}, args...)...)
			if r.code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, r.stderr)
				}
			}
			if !strings.HasPrefix(r.stderr, "error: ") {
				t.Errorf("stderr should start with error: %q", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("nothing should be printed on stdout: %q", r.stdout)
			}
			if n := f.writes(); n != 0 {
				t.Errorf("the API received %d writes; a bad input must write nothing", n)
			}
		})
	}
}

// deepManifest nests a flow sequence 100,000 deep: it once took 15 GB to parse.
var deepManifest = "apiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: n}\nspec:\n  image: i\n  x: " +
	strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "\n"

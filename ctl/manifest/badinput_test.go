package manifest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sanboot/sanboot/ctl/manifest"
)

// goodNode and goodImage are valid documents; a case appends lines to the
// spec or replaces parts of it.
const goodNode = `apiVersion: sanboot.io/v1
kind: Node
metadata:
  name: node-40
  labels: {rack: r4}
spec:
  image: debian-13
  macs: ["52:54:00:00:00:40"]
`

const goodImage = `apiVersion: sanboot.io/v1
kind: Image
metadata:
  name: img-40
spec:
  sizeBytes: 1GiB
  source:
    url: {url: "https://images.example/a.raw"}
`

// TestBadManifests is the table of malformed manifests: Load (what apply
// and diff call) refuses each, with every problem at its file:line:column
// and field path, and returns no object. ctl/cli's TestBadInput checks
// that apply prints them, exits 1 and writes nothing.
func TestBadManifests(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string   // bad.yaml (or bad.json when it starts with { or [)
		wantErr []string // substrings of the error
	}{
		// ---- YAML syntax and document shape
		{"yaml syntax", "apiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: x\n",
			[]string{"bad.yaml:3:", "not valid YAML or JSON"}},
		{"bad indentation", "apiVersion: sanboot.io/v1\nkind: Node\nmetadata:\n  name: x\n bad: 1\n",
			[]string{"bad.yaml:", "not valid YAML or JSON"}},
		{"scalar document", "hello\n",
			[]string{"bad.yaml:1:1: want an object (a mapping with apiVersion, kind, metadata and spec), got a string"}},
		{"list of strings", "- a\n- b\n",
			[]string{"bad.yaml:1:3: [0]: want an object"}},
		{"missing apiVersion", strings.Replace(goodNode, "apiVersion: sanboot.io/v1\n", "", 1),
			[]string{"bad.yaml:1:1: apiVersion: is required: apiVersion: sanboot.io/v1"}},
		{"wrong apiVersion", strings.Replace(goodNode, "sanboot.io/v1", "sanboot.io/v2", 1),
			[]string{`bad.yaml:1:13: apiVersion: "sanboot.io/v2" is not supported: use sanboot.io/v1`}},
		{"missing kind", strings.Replace(goodNode, "kind: Node\n", "", 1),
			[]string{"bad.yaml:1:1: kind: is required: Node or Image"}},
		{"unknown kind", strings.Replace(goodNode, "kind: Node", "kind: Pod", 1),
			[]string{`bad.yaml:2:7: kind: "Pod" is not a kind sanboot knows: use Node or Image`}},
		{"kind typo", strings.Replace(goodNode, "kind: Node", "kind: Nodes", 1),
			[]string{`(did you mean "Node"?)`}},
		{"missing metadata", strings.Replace(goodNode, "metadata:\n  name: node-40\n  labels: {rack: r4}\n", "", 1),
			[]string{"bad.yaml:1:1: metadata: is required: it holds the name"}},
		{"missing spec", goodNode[:strings.Index(goodNode, "spec:")],
			[]string{"bad.yaml:1:1: node/node-40: spec: is required"}},
		// ---- unknown fields
		{"unknown top-level field", strings.Replace(goodNode, "spec:", "specs:", 1),
			[]string{`bad.yaml:6:1: node/node-40: specs: unknown field; did you mean "spec"?`}},
		{"unknown spec field", goodNode + "  imgae: x\n",
			[]string{`bad.yaml:9:3: node/node-40: spec.imgae: unknown field; did you mean "image"? (known fields: image, initiatorIqn, macs, agent, chap, mutualChap, keepDisk)`}},
		{"snake_case field", goodNode + "  initiator_iqn: iqn.2004-10.com.example:n\n",
			[]string{`bad.yaml:9:3: node/node-40: spec.initiator_iqn: unknown field; did you mean "initiatorIqn"?`}},
		{"unknown metadata field", strings.Replace(goodNode, "  name: node-40\n", "  name: node-40\n  namespace: lab\n", 1),
			[]string{"bad.yaml:5:3: node/node-40: metadata.namespace: unknown field; known fields: name, project, labels"}},
		{"unknown source", strings.Replace(goodImage, "    url:", "    http:", 1),
			[]string{"bad.yaml:8:5: image/img-40: spec.source.http: unknown field"}},
		{"field given twice", goodNode + "  image: other\n",
			[]string{`bad.yaml:9:3: not valid YAML or JSON: mapping key "image" already defined at [7:3]`}},
		// ---- wrong types
		{"macs not a list", strings.Replace(goodNode, `macs: ["52:54:00:00:00:40"]`, `macs: "52:54:00:00:00:40"`, 1),
			[]string{"bad.yaml:8:9: node/node-40: spec.macs: want a list of strings, got a string"}},
		{"chap yes", goodNode + "  chap: yes\n",
			[]string{"bad.yaml:9:9: node/node-40: spec.chap: want true or false, got a string"}},
		{"image a number", strings.Replace(goodNode, "image: debian-13", "image: 13", 1),
			[]string{`bad.yaml:7:10: node/node-40: spec.image: want a string, got a number (13): quote it, e.g. "13"`}},
		{"metadata a string", strings.Replace(goodNode, "metadata:\n  name: node-40\n  labels: {rack: r4}\n", "metadata: node-40\n", 1),
			[]string{"bad.yaml:3:11: metadata: want a mapping, got a string"}},
		{"labels a list", strings.Replace(goodNode, "labels: {rack: r4}", "labels: [rack]", 1),
			[]string{"bad.yaml:5:11: node/node-40: metadata.labels: want a mapping of strings to strings, got a list"}},
		{"label value a number", strings.Replace(goodNode, "labels: {rack: r4}", "labels: {rack: 4}", 1),
			[]string{`bad.yaml:5:18: node/node-40: metadata.labels.rack: want a string, got a number (4): quote it`}},
		{"size a list", strings.Replace(goodImage, "sizeBytes: 1GiB", "sizeBytes: [1]", 1),
			[]string{`bad.yaml:6:14: image/img-40: spec.sizeBytes: want a size (a number of bytes, or e.g. "10GiB"), got a list`}},
		// ---- invalid values (the API's own checks, placed in the file)
		{"bad mac", strings.Replace(goodNode, `macs: ["52:54:00:00:00:40"]`, "macs:\n  - 52:54:00:00:00:40\n  - nope", 1),
			[]string{`bad.yaml:10:5: node/node-40: spec.macs[1]: "nope" is not a MAC address: use six hex octets, e.g. 52:54:00:12:34:56`}},
		{"duplicate mac", strings.Replace(goodNode, `macs: ["52:54:00:00:00:40"]`, `macs: ["52:54:00:00:00:40", "52-54-00-00-00-40"]`, 1),
			[]string{`bad.yaml:8:31: node/node-40: spec.macs[1]: "52-54-00-00-00-40" is the same MAC as spec.macs[0]`}},
		{"bad name", strings.Replace(goodNode, "name: node-40", "name: Node_40", 1),
			[]string{`bad.yaml:4:9: node/Node_40: metadata.name: "Node_40" is not a lowercase DNS label`}},
		{"missing name", strings.Replace(goodNode, "  name: node-40\n", "", 1),
			[]string{`bad.yaml:4:3: metadata.name: is required`}},
		{"bad initiator", goodNode + "  initiatorIqn: iqn.bogus\n",
			[]string{`bad.yaml:9:17: node/node-40: spec.initiatorIqn: "iqn.bogus" must be iqn.YYYY-MM`}},
		{"mutual chap without chap", goodNode + "  mutualChap: true\n",
			[]string{`bad.yaml:9:15: node/node-40: spec.mutualChap: "true" needs spec.chap`}},
		{"bad label key", strings.Replace(goodNode, "labels: {rack: r4}", "labels: {-rack: r4}", 1),
			[]string{`bad.yaml:5:12: node/node-40: metadata.labels: "-rack" is not a label key`}},
		{"bad project", strings.Replace(goodNode, "  name: node-40\n", "  name: node-40\n  project: Lab\n", 1),
			[]string{`bad.yaml:5:12: node/node-40: metadata.project: "Lab" is not a lowercase DNS label`}},
		{"size not a size", strings.Replace(goodImage, "sizeBytes: 1GiB", "sizeBytes: ten", 1),
			[]string{`bad.yaml:6:14: image/img-40: spec.sizeBytes: "ten" is not a size`}},
		{"size not sectors", strings.Replace(goodImage, "sizeBytes: 1GiB", "sizeBytes: 1000", 1),
			[]string{`bad.yaml:6:14: image/img-40: spec.sizeBytes: "1000" must be a positive multiple of 512 bytes`}},
		{"two sources", strings.Replace(goodImage, "    url:", "    blank: {}\n    url:", 1),
			[]string{`bad.yaml:8:5: image/img-40: spec.source: has blank and url: give exactly one source`}},
		{"no source kind", strings.Replace(goodImage, `    url: {url: "https://images.example/a.raw"}`, "    {}", 1),
			[]string{`image/img-40: spec.source: give one of blank, url, snapshot, copy, upload or file`}},
		{"ftp url", strings.Replace(goodImage, "https://", "ftp://", 1),
			[]string{`bad.yaml:8:16: image/img-40: spec.source.url.url: "ftp://images.example/a.raw" must be an http:// or https:// URL`}},
		{"bad sha256", strings.Replace(goodImage, `a.raw"}`, `a.raw", sha256: abc}`, 1),
			[]string{`bad.yaml:8:56: image/img-40: spec.source.url.sha256: "abc" must be 64 lowercase hex digits`}},
		{"missing file", strings.Replace(goodImage, `    url: {url: "https://images.example/a.raw"}`, "    file: nope.raw", 1),
			[]string{`bad.yaml:8:11: image/img-40: spec.source.file: cannot read `, `nope.raw`}},
		{"object twice", goodNode + "---\n" + goodNode,
			[]string{`bad.yaml:13:9: node/node-40: is also defined at bad.yaml:4:9 in project "default": define each object once`}},
		{"second document bad, first good", goodImage + "---\n" + strings.Replace(goodNode, "image: debian-13", "image: [x]", 1),
			[]string{`bad.yaml:16:10: node/node-40: spec.image: want a string, got a list`}},
		{"several problems at once", goodNode + "  chap: 1\n  bogus: 2\n",
			[]string{"bad.yaml:9:9: node/node-40: spec.chap: want true or false, got a number", "bad.yaml:10:3: node/node-40: spec.bogus: unknown field"}},
		// ---- JSON
		{"json syntax", `{"apiVersion": "sanboot.io/v1", "kind": "Node",`,
			[]string{"bad.json:", "not valid YAML or JSON"}},
		{"json wrong type", `{"apiVersion": "sanboot.io/v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {"image": "i", "macs": "x"}}`,
			[]string{`bad.json:1:107: node/n: spec.macs: want a list of strings, got a string`}},
		{"json unknown field in array", `[{"apiVersion": "sanboot.io/v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {"image": "i", "agnet": "a"}}]`,
			[]string{`bad.json:1:`, `node/n: spec.agnet: unknown field; did you mean "agent"?`}},
		{"json bad value", `{"apiVersion": "sanboot.io/v1", "kind": "Image", "metadata": {"name": "i"}, "spec": {"sizeBytes": -512}}`,
			[]string{`bad.json:1:99: image/i: spec.sizeBytes: "-512" must be a positive multiple of 512 bytes`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			name := "bad.yaml"
			if strings.HasPrefix(tc.file, "{") || strings.HasPrefix(tc.file, "[") {
				name = "bad.json"
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Chdir(dir) // so that messages name the file as given
			objs, err := manifest.Load(manifest.Input{Paths: []string{name}, Project: "default", Validate: true})
			if err == nil || objs != nil {
				t.Fatalf("Load = %d objects, %v; want an error and none", len(objs), err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not contain %q:\n%v", want, err)
				}
			}
		})
	}
}

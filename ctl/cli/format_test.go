package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// TestYAMLMatchesJSON: each YAML golden file holds the same data as its
// JSON twin, so YAML readers see the proto JSON names and values (MACs that
// look like base-60 numbers to YAML 1.1 readers are quoted).
func TestYAMLMatchesJSON(t *testing.T) {
	for _, name := range []string{"get_nodes", "get_node", "get_images", "get_agents", "get_nodes_empty"} {
		j, err := os.ReadFile(filepath.Join("testdata", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var fromJSON, fromYAML any
		if err := json.Unmarshal(j, &fromJSON); err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(y, &fromYAML); err != nil {
			t.Fatal(err)
		}
		// Numbers: YAML gives integers, JSON float64; compare as JSON.
		viaJSON, err := json.Marshal(fromYAML)
		if err != nil {
			t.Fatal(err)
		}
		fromYAML = nil
		if err := json.Unmarshal(viaJSON, &fromYAML); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fromJSON, fromYAML) {
			t.Errorf("%s: YAML and JSON differ:\n%v\n%v", name, fromJSON, fromYAML)
		}
	}
}

// TestGetApplyRoundTrip: what get -o yaml|json prints (status whole, zero
// values included) applies again and changes nothing.
func TestGetApplyRoundTrip(t *testing.T) {
	_, addr := seededFake(t)
	for _, tc := range []struct{ kind, name, format, want string }{
		{"node", "node-01", "yaml", "node/node-01 unchanged\n"},
		{"node", "node-02", "json", "node/node-02 unchanged\n"},
		{"image", "debian-13", "yaml", "image/debian-13 unchanged\n"},
		{"image", "scratch", "json", "image/scratch unchanged\n"},
	} {
		t.Run(tc.kind+"/"+tc.name+" -o "+tc.format, func(t *testing.T) {
			got := runWith(t, addr, nil, false, "get", tc.kind, tc.name, "-o", tc.format)
			if got.code != ExitOK {
				t.Fatalf("get: exit %d: %s", got.code, got.stderr)
			}
			if tc.kind == "node" && !strings.Contains(got.stdout, "lun") {
				t.Errorf("get %s -o %s has no lun:\n%s", tc.name, tc.format, got.stdout)
			}
			doc := got.stdout
			r := runWith(t, addr, strings.NewReader(doc), false, "apply", "-f", "-")
			if r.code != ExitOK || r.stdout != tc.want {
				t.Errorf("apply -f - of get's output: exit %d, stdout %q, stderr %q; want %q\n%s", r.code, r.stdout, r.stderr, tc.want, doc)
			}
		})
	}
}

package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
)

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{45 * time.Second, "45s"},
		{119 * time.Second, "119s"},
		{2 * time.Minute, "2m"},
		{5*time.Minute + 30*time.Second, "5m30s"},
		{45 * time.Minute, "45m"},
		{3*time.Hour + 5*time.Minute, "3h5m"},
		{5 * time.Hour, "5h"},
		{20 * time.Hour, "20h"},
		{50 * time.Hour, "2d2h"},
		{72 * time.Hour, "3d"},
		{30 * 24 * time.Hour, "30d"},
		{800 * 24 * time.Hour, "2y70d"},
	} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

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

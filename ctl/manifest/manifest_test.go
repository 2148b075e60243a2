package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

func TestDecode(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "disk.raw"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := `# leading comment only document
---
apiVersion: sanboot.io/v1
kind: Image
metadata: {name: base, labels: &l {os: debian}}
spec:
  source: {file: disk.raw}
---
apiVersion: sanboot.io/v1
kind: Node
metadata:
  name: n1
  project: lab
  labels: *l
  generation: 7        # read-only: ignored
spec:
  image: base
  macs: [52-54-00-AA-BB-CC]
  parentIgnored: null
status: {phase: Ready}
---
`
	_, err := Decode([]byte(in), "in.yaml", dir, "default", true)
	if err == nil || !strings.Contains(err.Error(), `in.yaml:19:3: node/n1: spec.parentIgnored: unknown field`) {
		t.Fatalf("err = %v", err)
	}
	in = strings.Replace(in, "  parentIgnored: null\n", "", 1)
	objs, err := Decode([]byte(in), "in.yaml", dir, "default", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("%d objects", len(objs))
	}
	im, n := objs[0], objs[1]
	if im.File != filepath.Join(dir, "disk.raw") || !im.SizeFromFile || im.Meta().GetProject() != "default" || im.Meta().GetLabels()["os"] != "debian" {
		t.Errorf("image %+v", im)
	}
	if n.Meta().GetProject() != "lab" || n.Meta().GetLabels()["os"] != "debian" || n.Node.GetSpec().GetMacs()[0] != "52:54:00:aa:bb:cc" || n.Meta().GetGeneration() != 0 {
		t.Errorf("node %v", n.Node)
	}
	if p := n.PositionOf("spec.macs[0]"); p.String() != "in.yaml:18:10" {
		t.Errorf("position of spec.macs[0] = %s", p)
	}
	if p := n.PositionOf("spec.initiatorIqn"); p.String() != "in.yaml:17:3" { // not given: spec's
		t.Errorf("position of a missing field = %s", p)
	}
	sorted := Sort([]*Object{n, {Kind: KindImage, Image: &sanbootv1.Image{Spec: &sanbootv1.ImageSpec{Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Snapshot{}}}}}, im})
	if sorted[0] != im || sorted[1] != n {
		t.Errorf("Sort: images first, nodes, then snapshots")
	}
}

func TestLoadDirAndStdin(t *testing.T) {
	dir := t.TempDir()
	doc := func(name string) string {
		return "apiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: " + name + "}\nspec: {image: i}\n"
	}
	for name, content := range map[string]string{"b.yaml": doc("b"), "a.json": `{"apiVersion":"sanboot.io/v1","kind":"Node","metadata":{"name":"a"},"spec":{"image":"i"}}`, "notes.txt": "ignored"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := Load(Input{Paths: []string{dir, Stdin}, Stdin: strings.NewReader(doc("c")), Project: "p", Validate: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.Meta().GetProject()+"/"+o.Meta().GetName())
	}
	if got := strings.Join(names, " "); got != "p/a p/b p/c" {
		t.Errorf("objects %s", got)
	}
}

// TestDecodeEFIBootPath: an image manifest names its EFI boot path; a bad
// one is an error that says where.
func TestDecodeEFIBootPath(t *testing.T) {
	in := "apiVersion: sanboot.io/v1\nkind: Image\nmetadata: {name: base}\nspec:\n  sizeBytes: 1GiB\n  efiBootPath: '\\EFI\\debian\\shimx64.efi'\n"
	objs, err := Decode([]byte(in), "in.yaml", t.TempDir(), "default", true)
	if err != nil {
		t.Fatal(err)
	}
	if got := objs[0].Image.GetSpec().GetEfiBootPath(); got != `\EFI\debian\shimx64.efi` {
		t.Errorf("efiBootPath = %q", got)
	}
	bad := strings.Replace(in, `\EFI\debian\shimx64.efi`, `/EFI/debian/shimx64.efi`, 1)
	if _, err := Decode([]byte(bad), "in.yaml", t.TempDir(), "default", true); err == nil || !strings.Contains(err.Error(), "spec.efiBootPath") {
		t.Errorf("bad efiBootPath: err = %v, want one naming spec.efiBootPath", err)
	}
}

// A file is parsed a document at a time; every position still counts the
// lines of the whole file.
func TestDocumentsKeepPositions(t *testing.T) {
	node := "apiVersion: sanboot.io/v1\nkind: Node\nmetadata: {name: %s}\nspec: {image: base}\n"
	doc := func(name string) string { return strings.ReplaceAll(node, "%s", name) }
	for _, c := range []struct {
		what, in, want string
	}{
		{"a field error in the third document",
			doc("a") + "---\n" + doc("b") + "--- # comment\n" + strings.Replace(doc("c"), "spec:", "spex:", 1),
			"in.yaml:14:1: node/c: spex: unknown field"},
		{"a syntax error in the second document",
			doc("a") + "---\n" + "apiVersion: [unclosed\n",
			"in.yaml:6:"},
		{"a marker with text after it, CRLF lines",
			strings.ReplaceAll(doc("a")+"--- \n"+strings.Replace(doc("b"), "kind:", "kinds:", 1), "\n", "\r\n"),
			"in.yaml:6:1: kind: is required"},
	} {
		_, err := Decode([]byte(c.in), "in.yaml", t.TempDir(), "default", true)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.what, err, c.want)
		}
	}
	objs, err := Decode([]byte(doc("a")+"---\n"+doc("b")+"---\n---\n"+doc("c")+"...\n"), "in.yaml", t.TempDir(), "default", true)
	if err != nil || len(objs) != 3 || objs[2].Pos.Line != 12 {
		t.Fatalf("three documents: %d objects (%v), the third at %v", len(objs), err, objs[len(objs)-1].Pos)
	}
}

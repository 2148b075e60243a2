package api

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// The tables below are also the seed corpora of the fuzz targets.

var validNames = []string{
	"a",
	"0",
	"node-01",
	"default",
	"a-b-c",
	"1node",
	"node1",
	"a--b",
	strings.Repeat("a", 63),
	"a" + strings.Repeat("-", 61) + "z",
}

// invalidNames maps a name to a piece of the message it must get.
var invalidNames = map[string]string{
	"":                       "is required",
	strings.Repeat("a", 64):  "at most 63",
	strings.Repeat("a", 300): "at most 63",
	"Node":                   "use a-z, 0-9 and '-'",
	"NODE-01":                "use a-z, 0-9 and '-'",
	"-node":                  "starting and ending with a letter or digit",
	"node-":                  "starting and ending with a letter or digit",
	"-":                      "use a-z, 0-9 and '-'",
	"my_node":                "use a-z, 0-9 and '-'",
	"node.01":                "use a-z, 0-9 and '-'",
	".":                      "use a-z, 0-9 and '-'",
	"..":                     "use a-z, 0-9 and '-'",
	"a/b":                    "use a-z, 0-9 and '-'",
	"nöde":                   "use a-z, 0-9 and '-'",
	"ノード":                    "use a-z, 0-9 and '-'",
	" node":                  "use a-z, 0-9 and '-'",
	"node ":                  "use a-z, 0-9 and '-'",
	"no de":                  "use a-z, 0-9 and '-'",
	"node\n":                 "use a-z, 0-9 and '-'",
	"node\x00":               "use a-z, 0-9 and '-'",
	"\xff":                   "use a-z, 0-9 and '-'",
}

func TestValidateName(t *testing.T) {
	for _, s := range validNames {
		if err := ValidateName("metadata.name", s); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", s, err)
		}
	}
	for s, want := range invalidNames {
		err := ValidateName("metadata.name", s)
		checkFieldError(t, "ValidateName("+quoteShort(s)+")", err, "metadata.name", want)
	}
}

var validIQNs = []string{
	// RFC 3720 3.2.6.3.1
	"iqn.2001-04.com.example:storage:diskarrays-sn-a8675309",
	"iqn.2001-04.com.example",
	"iqn.2001-04.com.example:storage.tape1.sys1.xyz",
	"iqn.2001-04.com.example:storage.disk2.sys1.xyz",
	"iqn.1987-05.com.cisco:01.4438aea62f8b",
	"iqn.1991-05.com.microsoft:host-01.example.com",
	"iqn.2026-11.io.sanboot:default.node-1",
	"iqn.2026-11.io.sanboot:initiator.default.node-1",
	"iqn.2026-01.io.sanboot",
	"iqn.2026-12.x",
	"iqn.2026-12.x:" + strings.Repeat("a", 223-len("iqn.2026-12.x:")),
	// RFC 3720 3.2.6.3.2
	"eui.02004567A425678D",
	"eui.0000000000000000",
	"eui.FFFFFFFFFFFFFFFF",
	// RFC 3980
	"naa.52004567BA64678D",
	"naa.62004567BA64678D0123456789ABCDEF",
}

// invalidIQNs maps an iSCSI name to a piece of the message it must get.
var invalidIQNs = map[string]string{
	"":                                "is required",
	"iqn.2001-13.com.example:storage": "iqn.YYYY-MM",
	"iqn.2001-00.com.example:storage": "iqn.YYYY-MM",
	"iqn.2001-4.com.example:storage":  "iqn.YYYY-MM",
	"iqn.01-04.com.example:storage":   "iqn.YYYY-MM",
	"iqn.com.example:storage":         "iqn.YYYY-MM",
	"iqn.2001-04:storage":             "iqn.YYYY-MM",
	"iqn.2001-04.":                    "iqn.YYYY-MM",
	"iqn.2001-04.com..example":        "iqn.YYYY-MM",
	"iqn.2001-04.com.example.":        "iqn.YYYY-MM",
	"iqn.2001-04.-com.example":        "iqn.YYYY-MM",
	"iqn.2001-04.com-.example":        "iqn.YYYY-MM",
	"iqn.2001-04.com_x.example":       "iqn.YYYY-MM",
	"IQN.2001-04.com.example:storage": "iqn.YYYY-MM",
	"Iqn.2001-04.com.example":         "iqn.YYYY-MM",
	"iqn.2001-04.Com.Example:storage": "lowercase",
	"iqn.2001-04.com.example:Storage": "lowercase",
	"iqn.2001-04.com.example:disk 1":  "iqn.YYYY-MM",
	" iqn.2001-04.com.example":        "iqn.YYYY-MM",
	"iqn.2001-04.com.example ":        "iqn.YYYY-MM",
	"iqn.2001-04.com.example:a/b":     "iqn.YYYY-MM",
	"iqn.2001-04.com.example:ü":       "iqn.YYYY-MM",
	"iqn.2001-04.com.example:a\n":     "iqn.YYYY-MM",
	"iqn.2026-12.x:" + strings.Repeat("a", 224-len("iqn.2026-12.x:")): "at most 223",
	strings.Repeat("x", 1000):             "at most 223",
	"eui.02004567A425678":                 "exactly 16 uppercase hex digits",
	"eui.02004567A425678D0":               "exactly 16 uppercase hex digits",
	"eui.02004567a425678d":                "exactly 16 uppercase hex digits",
	"eui.02004567A425678G":                "exactly 16 uppercase hex digits",
	"eui.":                                "exactly 16 uppercase hex digits",
	"EUI.02004567A425678D":                "eui. followed by 16 hex digits",
	"naa.52004567ba64678d":                "16 or 32 uppercase hex digits",
	"naa.52004567BA64678D01":              "16 or 32 uppercase hex digits",
	"naa.62004567BA64678D0123456789ABCDE": "16 or 32 uppercase hex digits",
	"naa.":                                "16 or 32 uppercase hex digits",
	"02004567A425678D":                    "naa. followed by 16 or 32 hex digits",
	"iqn":                                 "iqn.YYYY-MM",
	"iqn.":                                "iqn.YYYY-MM",
}

func TestValidateIQN(t *testing.T) {
	for _, s := range validIQNs {
		if err := ValidateIQN("spec.initiatorIqn", s); err != nil {
			t.Errorf("ValidateIQN(%q) = %v, want nil", s, err)
		}
	}
	for s, want := range invalidIQNs {
		err := ValidateIQN("spec.initiatorIqn", s)
		checkFieldError(t, "ValidateIQN("+quoteShort(s)+")", err, "spec.initiatorIqn", want)
	}
}

func TestDerivedIQNsAreValid(t *testing.T) {
	long := strings.Repeat("z", 63)
	for _, pn := range [][2]string{{"default", "node-1"}, {"a", "b"}, {long, long}} {
		p, n := pn[0], pn[1]
		for _, iqn := range []string{TargetIQN("", p, n), TargetIQN("iqn.2001-04.com.example", p, n), DefaultInitiatorIQN(p, n)} {
			if err := ValidateIQN("iqn", iqn); err != nil {
				t.Errorf("derived IQN for %s/%s: %v", p, n, err)
			}
		}
	}
	if got, want := TargetIQN("", "default", "node-1"), "iqn.2026-11.io.sanboot:default.node-1"; got != want {
		t.Errorf("TargetIQN = %q, want %q", got, want)
	}
	if got, want := DefaultInitiatorIQN("default", "node-1"), "iqn.2026-11.io.sanboot:initiator.default.node-1"; got != want {
		t.Errorf("DefaultInitiatorIQN = %q, want %q", got, want)
	}
	// '.' separates project and node and no name holds a '.', so two nodes
	// never share a target.
	if TargetIQN("", "a", "b-c") == TargetIQN("", "a-b", "c") {
		t.Error("TargetIQN is not injective")
	}
}

func TestProjectOrDefault(t *testing.T) {
	if got := ProjectOrDefault(""); got != DefaultProject {
		t.Errorf("ProjectOrDefault(\"\") = %q", got)
	}
	if got := ProjectOrDefault("lab"); got != "lab" {
		t.Errorf("ProjectOrDefault(lab) = %q", got)
	}
}

// macCases maps an input to its normal form, or to "" when it is invalid.
var macCases = map[string]string{
	"52:54:00:12:34:56":       "52:54:00:12:34:56",
	"52-54-00-12-34-56":       "52:54:00:12:34:56",
	"52:54:00:AB:CD:EF":       "52:54:00:ab:cd:ef",
	"52-54-00-Ab-cD-eF":       "52:54:00:ab:cd:ef",
	"ff:ff:ff:ff:ff:ff":       "ff:ff:ff:ff:ff:ff",
	"00:00:00:00:00:00":       "00:00:00:00:00:00",
	"":                        "",
	"52:54:00:12:34":          "",
	"52:54:00:12:34:56:78":    "",
	"02:00:5e:10:00:00:00:01": "", // EUI-64
	"02-00-5e-10-00-00-00-01": "",
	"5254.0012.3456":          "", // dotted
	"0200.5e10.0000.0001":     "",
	"525400123456":            "",
	"52:54:00-12:34:56":       "", // mixed separators
	"52:54:00:12:34:5g":       "",
	"52:54:00:12:34:5":        "",
	"52:54:00:12:34:567":      "",
	"52 54 00 12 34 56":       "",
	"52:54:00:12:34:56 ":      "",
	" 52:54:00:12:34:56":      "",
	"not-a-mac":               "",
	"zz:zz:zz:zz:zz:zz":       "",
	"00:00:5e:00:53:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11": "", // InfiniBand
}

func TestNormalizeMAC(t *testing.T) {
	for in, want := range macCases {
		got, err := NormalizeMAC("spec.macs[0]", in)
		if want == "" {
			checkFieldError(t, "NormalizeMAC("+quoteShort(in)+")", err, "spec.macs[0]", "six hex octets, e.g. 52:54:00:12:34:56")
			if got != "" {
				t.Errorf("NormalizeMAC(%q) = %q with an error, want \"\"", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("NormalizeMAC(%q) = %q, %v; want %q", in, got, err, want)
			continue
		}
		if again, err := NormalizeMAC("f", got); err != nil || again != got {
			t.Errorf("NormalizeMAC(%q) = %q, %v; a normal MAC must normalise to itself", got, again, err)
		}
	}
}

var validPortals = []string{
	"127.0.0.1:3260",
	"10.0.0.1:1",
	"10.0.0.1:65535",
	"0.0.0.0:3260",
	"[::1]:3260",
	"[2001:db8::1]:3260",
	"[fe80::1%eth0]:3260",
	"[::ffff:10.0.0.1]:3260",
}

var invalidPortals = []string{
	"",
	"127.0.0.1",
	"127.0.0.1:",
	"127.0.0.1:0",
	"127.0.0.1:65536",
	"127.0.0.1:-1",
	"127.0.0.1:iscsi",
	"::1:3260",
	"[::1]",
	"storage-1:3260",
	"localhost:3260",
	"256.0.0.1:3260",
	"1.2.3:3260",
	" 127.0.0.1:3260",
	"127.0.0.1:3260 ",
	"iscsi://127.0.0.1:3260",
	"127.0.0.1:3260/",
}

func TestValidatePortal(t *testing.T) {
	for _, s := range validPortals {
		if err := ValidatePortal("portals[0]", s); err != nil {
			t.Errorf("ValidatePortal(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range invalidPortals {
		checkFieldError(t, "ValidatePortal("+quoteShort(s)+")", ValidatePortal("portals[0]", s), "portals[0]", "use IP:PORT, e.g. 127.0.0.1:3260")
	}
}

func TestValidateLabels(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	valid := []map[string]string{
		nil,
		{},
		{"rack": "r1"},
		{"rack": ""},
		{"Rack": "R1"},
		{"a": "b", "c": "d"},
		{"example.com/role": "worker"},
		{"sub.example.com/role": "worker"},
		{"a_b.c-d": "x_y.z-w"},
		{long63: long63},
		{"example.com/" + long63: "v"},
		{"0": "0"},
	}
	for _, l := range valid {
		if err := ValidateLabels("metadata.labels", l); err != nil {
			t.Errorf("ValidateLabels(%v) = %v, want nil", l, err)
		}
	}
	const keyMsg, valMsg = "[prefix/]name, name of at most 63", "at most 63 of A-Z a-z 0-9 - _ ., starting and ending alphanumeric"
	invalid := []struct {
		key, value string
		field, msg string
	}{
		{"", "v", "metadata.labels", keyMsg},
		{"-rack", "v", "metadata.labels", keyMsg},
		{"rack-", "v", "metadata.labels", keyMsg},
		{"ra ck", "v", "metadata.labels", keyMsg},
		{"rack!", "v", "metadata.labels", keyMsg},
		{"räck", "v", "metadata.labels", keyMsg},
		{strings.Repeat("a", 64), "v", "metadata.labels", keyMsg},
		{"example.com/" + strings.Repeat("a", 64), "v", "metadata.labels", keyMsg},
		{"Example.com/role", "v", "metadata.labels", keyMsg},
		{"example.com/", "v", "metadata.labels", keyMsg},
		{"/role", "v", "metadata.labels", keyMsg},
		{"a/b/c", "v", "metadata.labels", keyMsg},
		{"a_b.com/role", "v", "metadata.labels", keyMsg},
		{strings.Repeat("a", 250) + "/role", "v", "metadata.labels", keyMsg},
		{"rack", "-r1", "metadata.labels.rack", valMsg},
		{"rack", "r1-", "metadata.labels.rack", valMsg},
		{"rack", "r 1", "metadata.labels.rack", valMsg},
		{"rack", "r/1", "metadata.labels.rack", valMsg},
		{"rack", "r=1", "metadata.labels.rack", valMsg},
		{"rack", "r,1", "metadata.labels.rack", valMsg},
		{"rack", "ü", "metadata.labels.rack", valMsg},
		{"rack", strings.Repeat("a", 64), "metadata.labels.rack", valMsg},
	}
	for _, c := range invalid {
		err := ValidateLabels("metadata.labels", map[string]string{c.key: c.value, "ok": "fine"})
		checkFieldError(t, "ValidateLabels("+quoteShort(c.key)+": "+quoteShort(c.value)+")", err, c.field, c.msg)
	}

	// Several bad labels: one error each, always in the same order.
	bad := map[string]string{"z z": "ok", "a a": "ok", "m": "b a d"}
	first := ValidateLabels("l", bad)
	if n := len(fieldErrors(first)); n != 3 {
		t.Fatalf("ValidateLabels(%v) gave %d errors, want 3: %v", bad, n, first)
	}
	for range 20 {
		if err := ValidateLabels("l", bad); err.Error() != first.Error() {
			t.Fatalf("ValidateLabels is not deterministic:\n%v\n%v", first, err)
		}
	}
}

func TestImageSize(t *testing.T) {
	sizes := map[int64]bool{
		512:                  true,
		4096:                 true,
		1 << 30:              true,
		10 << 30:             true,
		MaxImageSize:         true,
		MaxImageSize - 512:   true,
		0:                    false,
		-1:                   false,
		-512:                 false,
		1:                    false,
		511:                  false,
		513:                  false,
		1000:                 false,
		MaxImageSize + 512:   false,
		MaxImageSize + 1:     false,
		math.MaxInt64:        false,
		math.MinInt64:        false,
		math.MaxInt64 - 511:  false,
		math.MinInt64 + 512:  false,
		1<<62 + 512:          false,
		(1 << 40) + 512*1001: true,
	}
	for size, ok := range sizes {
		im := validImage()
		im.Spec.SizeBytes = size
		err := ValidateImage(im)
		if ok {
			if err != nil {
				t.Errorf("size %d: %v, want nil", size, err)
			}
			continue
		}
		checkFieldError(t, "size", err, "spec.sizeBytes", "positive multiple of 512 bytes, at most 64 TiB")
	}
}

func TestValidateSHA256(t *testing.T) {
	const empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	valid := []string{empty, strings.Repeat("0", 64), strings.Repeat("f", 64)}
	invalid := []string{
		"",
		strings.ToUpper(empty),
		empty[:63],
		empty + "0",
		empty[:63] + "g",
		"g" + empty[1:],
		empty[:32] + " " + empty[33:],
		"sha256:" + empty,
		strings.Repeat("é", 32),
	}
	for _, s := range valid {
		for _, optional := range []bool{false, true} {
			if err := validateSHA256("sha256", s, optional); err != nil {
				t.Errorf("validateSHA256(%q, %v) = %v", s, optional, err)
			}
		}
	}
	if err := validateSHA256("sha256", "", true); err != nil {
		t.Errorf("an optional empty sha256 gave %v", err)
	}
	for _, s := range invalid {
		checkFieldError(t, "validateSHA256("+quoteShort(s)+")", validateSHA256("sha256", s, false), "sha256", "64 lowercase hex digits")
		if s != "" {
			checkFieldError(t, "validateSHA256("+quoteShort(s)+", optional)", validateSHA256("sha256", s, true), "sha256", "64 lowercase hex digits")
		}
	}
}

func TestValidateURL(t *testing.T) {
	valid := []string{
		"http://images.example.com/u.raw",
		"https://images.example.com/u.raw",
		"HTTPS://images.example.com/u.raw",
		"https://10.0.0.1:8080/u.raw?sig=abc",
		"https://[2001:db8::1]/u.raw",
		"http://cp",
	}
	invalid := []string{
		"",
		"images.example.com/u.raw",
		"/u.raw",
		"ftp://images.example.com/u.raw",
		"file:///srv/u.raw",
		"http://",
		"https:///u.raw",
		"https://:443/u.raw",
		"http:images.example.com",
		"https://images.example.com:http/u.raw",
		"https://images example.com/u.raw",
		"https://[::1/u.raw",
		" https://images.example.com/u.raw",
	}
	for _, s := range valid {
		if err := validateURL("url", s); err != nil {
			t.Errorf("validateURL(%q) = %v", s, err)
		}
	}
	for _, s := range invalid {
		checkFieldError(t, "validateURL("+quoteShort(s)+")", validateURL("url", s), "url", "http:// or https:// URL")
	}
}

// fieldCases is the format of testdata/invalid_*.yaml.
type fieldCases struct {
	Base  map[string]any `json:"base"`
	Cases []struct {
		Name    string         `json:"name"`
		Patch   map[string]any `json:"patch"`
		Field   string         `json:"field"`
		Allowed string         `json:"allowed"`
	} `json:"cases"`
}

func loadFieldCases(t *testing.T, file string) fieldCases {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var fc fieldCases
	if err := yaml.UnmarshalStrict(b, &fc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if len(fc.Cases) == 0 {
		t.Fatalf("%s holds no cases", file)
	}
	return fc
}

// mergePatch merges patch into base the way RFC 7386 does: objects merge
// key by key, null removes a key, anything else replaces.
func mergePatch(base, patch map[string]any) map[string]any {
	out := make(map[string]any, len(base))
	for k, v := range base {
		out[k] = v
	}
	for k, pv := range patch {
		switch pv := pv.(type) {
		case nil:
			delete(out, k)
		case map[string]any:
			bv, _ := out[k].(map[string]any)
			out[k] = mergePatch(bv, pv)
		default:
			out[k] = pv
		}
	}
	return out
}

// decodeInto turns a YAML-derived object into the protobuf message m.
func decodeInto(t *testing.T, obj map[string]any, m proto.Message) {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatalf("protojson %s: %v", b, err)
	}
}

func TestValidateNodeEveryField(t *testing.T) {
	fc := loadFieldCases(t, "invalid_nodes.yaml")
	base := &sanbootv1.Node{}
	decodeInto(t, fc.Base, base)
	if err := ValidateNode(base); err != nil {
		t.Fatalf("the base node of testdata/invalid_nodes.yaml is invalid: %v", err)
	}
	for _, c := range fc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			n := &sanbootv1.Node{}
			decodeInto(t, mergePatch(fc.Base, c.Patch), n)
			checkOnlyFieldError(t, ValidateNode(n), c.Field, c.Allowed)
		})
	}
	covered := map[string]bool{}
	for _, c := range fc.Cases {
		covered[stripIndex(c.Field)] = true
	}
	for _, f := range []string{"metadata", "metadata.name", "metadata.project", "metadata.labels", "spec",
		"spec.image", "spec.initiatorIqn", "spec.macs", "spec.agent"} {
		if !covered[f] {
			t.Errorf("testdata/invalid_nodes.yaml has no case for %s", f)
		}
	}
}

func TestValidateImageEveryField(t *testing.T) {
	fc := loadFieldCases(t, "invalid_images.yaml")
	base := &sanbootv1.Image{}
	decodeInto(t, fc.Base, base)
	if err := ValidateImage(base); err != nil {
		t.Fatalf("the base image of testdata/invalid_images.yaml is invalid: %v", err)
	}
	for _, c := range fc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			im := &sanbootv1.Image{}
			decodeInto(t, mergePatch(fc.Base, c.Patch), im)
			checkOnlyFieldError(t, ValidateImage(im), c.Field, c.Allowed)
		})
	}
	covered := map[string]bool{}
	for _, c := range fc.Cases {
		covered[stripIndex(c.Field)] = true
	}
	for _, f := range []string{"metadata", "metadata.name", "metadata.project", "metadata.labels", "spec",
		"spec.sizeBytes", "spec.agents", "spec.source", "spec.source.snapshot.node", "spec.source.copy.image",
		"spec.source.url.url", "spec.source.url.sha256", "spec.source.upload.uploadId", "spec.source.upload.sha256"} {
		if !covered[f] {
			t.Errorf("testdata/invalid_images.yaml has no case for %s", f)
		}
	}
}

func validNode() *sanbootv1.Node {
	return &sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Name: "node-01", Labels: map[string]string{"rack": "r1"}},
		Spec: &sanbootv1.NodeSpec{
			Image: "ubuntu",
			Macs:  []string{"52-54-00-AB-CD-EF", "52:54:00:12:34:56"},
		},
	}
}

func validImage() *sanbootv1.Image {
	return &sanbootv1.Image{
		Metadata: &sanbootv1.ObjectMeta{Name: "ubuntu"},
		Spec:     &sanbootv1.ImageSpec{SizeBytes: 1 << 30},
	}
}

func TestValidateNodeNormalises(t *testing.T) {
	n := validNode()
	if err := ValidateNode(n); err != nil {
		t.Fatal(err)
	}
	if n.Metadata.Project != DefaultProject {
		t.Errorf("project = %q, want %q", n.Metadata.Project, DefaultProject)
	}
	if want := []string{"52:54:00:ab:cd:ef", "52:54:00:12:34:56"}; !slices.Equal(n.Spec.Macs, want) {
		t.Errorf("macs = %q, want %q", n.Spec.Macs, want)
	}
	// Validating a normalised node changes nothing.
	before := proto.Clone(n)
	if err := ValidateNode(n); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(before, n) {
		t.Errorf("second ValidateNode changed the node: %v -> %v", before, n)
	}
	// Status is written by the system and ignored here.
	n.Status = &sanbootv1.NodeStatus{Phase: "nonsense", Portals: []string{"nonsense"}}
	if err := ValidateNode(n); err != nil {
		t.Errorf("ValidateNode looked at the status: %v", err)
	}
}

func TestValidateNodeEveryProblemAtOnce(t *testing.T) {
	if err := ValidateNode(nil); err == nil {
		t.Error("ValidateNode(nil) = nil")
	}
	n := &sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: "Lab", Name: "node_1", Labels: map[string]string{"a b": "c"}},
		Spec: &sanbootv1.NodeSpec{
			InitiatorIqn: "iqn.bad",
			Macs:         []string{"52:54:00:12:34:56", "x", "52-54-00-12-34-56"},
			Agent:        "A",
		},
	}
	err := ValidateNode(n)
	var got []string
	for _, fe := range fieldErrors(err) {
		got = append(got, fe.Field)
	}
	want := []string{"metadata.project", "metadata.name", "metadata.labels", "spec.image",
		"spec.initiatorIqn", "spec.macs[1]", "spec.macs[2]", "spec.agent"}
	if !slices.Equal(got, want) {
		t.Errorf("fields = %q, want %q\n%v", got, want, err)
	}
	if !strings.Contains(err.Error(), "spec.macs[2]: \"52-54-00-12-34-56\" is the same MAC as spec.macs[0]") {
		t.Errorf("duplicate MAC message does not name the first: %v", err)
	}
	// Missing spec: the metadata problems still come back.
	n = &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Name: "-x"}}
	got = nil
	for _, fe := range fieldErrors(ValidateNode(n)) {
		got = append(got, fe.Field)
	}
	if want := []string{"metadata.name", "spec"}; !slices.Equal(got, want) {
		t.Errorf("fields = %q, want %q", got, want)
	}
}

func TestValidateImageSources(t *testing.T) {
	const sum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	valid := []*sanbootv1.ImageSource{
		nil,
		{Kind: &sanbootv1.ImageSource_Blank{}},
		{Kind: &sanbootv1.ImageSource_Blank{Blank: &sanbootv1.BlankSource{}}},
		{Kind: &sanbootv1.ImageSource_Upload{Upload: &sanbootv1.UploadSource{UploadId: "u-1", Sha256: sum}}},
		{Kind: &sanbootv1.ImageSource_Url{Url: &sanbootv1.URLSource{Url: "https://example.com/u.raw"}}},
		{Kind: &sanbootv1.ImageSource_Url{Url: &sanbootv1.URLSource{Url: "https://example.com/u.raw", Sha256: sum}}},
		{Kind: &sanbootv1.ImageSource_Snapshot{Snapshot: &sanbootv1.SnapshotSource{Node: "node-01"}}},
		{Kind: &sanbootv1.ImageSource_Copy{Copy: &sanbootv1.CopySource{Image: "ubuntu"}}},
	}
	for _, src := range valid {
		im := validImage()
		im.Spec.Source = src
		if err := ValidateImage(im); err != nil {
			t.Errorf("source %v: %v", src, err)
		}
		if im.Spec.Source == nil {
			t.Errorf("source %v was not defaulted", src)
		}
	}
	im := validImage()
	if err := ValidateImage(im); err != nil {
		t.Fatal(err)
	}
	if im.Spec.Source.GetBlank() == nil || im.Metadata.Project != DefaultProject {
		t.Errorf("defaults not applied: %v", im)
	}
	// Oneof members that are set but nil must not panic.
	for _, src := range []*sanbootv1.ImageSource{
		{Kind: &sanbootv1.ImageSource_Upload{}},
		{Kind: &sanbootv1.ImageSource_Url{}},
		{Kind: &sanbootv1.ImageSource_Snapshot{}},
		{Kind: &sanbootv1.ImageSource_Copy{}},
	} {
		im := validImage()
		im.Spec.Source = src
		if err := ValidateImage(im); err == nil {
			t.Errorf("source %T with a nil member validated", src.Kind)
		}
	}
	if err := ValidateImage(nil); err == nil {
		t.Error("ValidateImage(nil) = nil")
	}
}

// fieldErrors flattens err (joined and wrapped) into its *FieldErrors, in
// order.
func fieldErrors(err error) []*FieldError {
	if err == nil {
		return nil
	}
	if fe, ok := err.(*FieldError); ok {
		return []*FieldError{fe}
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		var out []*FieldError
		for _, e := range u.Unwrap() {
			out = append(out, fieldErrors(e)...)
		}
		return out
	case interface{ Unwrap() error }:
		return fieldErrors(u.Unwrap())
	}
	return nil
}

// checkFieldError wants err to be (or to hold) a *FieldError on field whose
// message contains allowed.
func checkFieldError(t *testing.T, what string, err error, field, allowed string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s = nil, want an error on %s", what, field)
		return
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Errorf("%s = %v (%T), want a *FieldError", what, err, err)
		return
	}
	if fe.Field != field {
		t.Errorf("%s: error on %q, want %q: %v", what, fe.Field, field, err)
	}
	if !strings.Contains(err.Error(), allowed) {
		t.Errorf("%s: message %q does not say %q", what, err.Error(), allowed)
	}
	if !strings.HasPrefix(fe.Error(), field+": ") {
		t.Errorf("%s: message %q does not start with the field", what, fe.Error())
	}
}

// checkOnlyFieldError wants err to hold exactly one *FieldError, on field.
func checkOnlyFieldError(t *testing.T, err error, field, allowed string) {
	t.Helper()
	fes := fieldErrors(err)
	if len(fes) != 1 {
		t.Fatalf("got %d field errors, want 1 on %s: %v", len(fes), field, err)
	}
	checkFieldError(t, "validate", err, field, allowed)
}

// stripIndex turns "spec.macs[1]" into "spec.macs" and "metadata.labels.x"
// into "metadata.labels".
func stripIndex(field string) string {
	if i := strings.IndexByte(field, '['); i >= 0 {
		field = field[:i]
	}
	if rest, ok := strings.CutPrefix(field, "metadata.labels."); ok && rest != "" {
		return "metadata.labels"
	}
	return field
}

func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func TestValidateEFIBootPath(t *testing.T) {
	for _, ok := range []string{DefaultEFIBootPath, `\EFI\debian\shimx64.efi`, `\boot.efi`} {
		if err := ValidateEFIBootPath("p", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", `EFI\BOOT\BOOTX64.EFI`, `\EFI\BOOT\`, `\EFI\\BOOTX64.EFI`, `\EFI\..\x.efi`, `\EFI\BOOT\BOOT X64.EFI`,
		`\EFI\BOOT\${x}.EFI`, `\EFI\BOOT\a||shell.EFI`, "/EFI/BOOT/BOOTX64.EFI", `\EFI\BOOT\grubx64`, `\` + strings.Repeat("a", 252) + ".EFI"} {
		if err := ValidateEFIBootPath("p", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

package api

// Fuzz targets. Each is seeded from the tables of the unit tests and runs as
// a plain test on its seeds under `go test`; to fuzz one:
//
//	go test -run='^$' -fuzz=FuzzValidateIQN -fuzztime=20s ./api/

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// isName is an independent statement of a valid name: a lowercase DNS label
// of 1 to 63 bytes.
func isName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// wantFieldError fails unless err is a *FieldError on field with a message.
func wantFieldError(t *testing.T, err error, field string) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FieldError", err, err)
	}
	if fe.Field != field || fe.Msg == "" || !strings.HasPrefix(err.Error(), field+": ") {
		t.Fatalf("error %#v: want field %q and a message", fe, field)
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range validNames {
		f.Add(s)
	}
	for s := range invalidNames {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateName("f", s)
		if got, want := err == nil, isName(s); got != want {
			t.Fatalf("ValidateName(%q) = %v; a DNS label under 64 bytes: %v", s, err, want)
		}
		if err != nil {
			wantFieldError(t, err, "f")
			return
		}
		// A valid name is safe as one path or key segment.
		if s == "." || s == ".." || strings.ContainsAny(s, "/\x00") {
			t.Fatalf("valid name %q is not a safe path segment", s)
		}
		if p, n, err := ProjectName(NodeKey(s, s)); err != nil || p != s || n != s {
			t.Fatalf("ProjectName(NodeKey(%q)) = %q, %q, %v", s, p, n, err)
		}
		if err := ValidateIQN("iqn", TargetIQN("", s, s)); err != nil {
			t.Fatalf("TargetIQN of valid name %q: %v", s, err)
		}
		if err := ValidateIQN("iqn", DefaultInitiatorIQN(s, s)); err != nil {
			t.Fatalf("DefaultInitiatorIQN of valid name %q: %v", s, err)
		}
	})
}

func FuzzValidateIQN(f *testing.F) {
	for _, s := range validIQNs {
		f.Add(s)
	}
	for s := range invalidIQNs {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateIQN("f", s)
		if err != nil {
			wantFieldError(t, err, "f")
			return
		}
		if len(s) > 223 {
			t.Fatalf("ValidateIQN accepted %d bytes", len(s))
		}
		for _, c := range []byte(s) {
			if c <= ' ' || c >= 0x7f || c == '/' {
				t.Fatalf("ValidateIQN accepted %q with byte %q", s, c)
			}
		}
		switch {
		case strings.HasPrefix(s, "iqn."):
			if strings.ToLower(s) != s {
				t.Fatalf("ValidateIQN accepted %q, not lowercase", s)
			}
			if len(s) < len("iqn.YYYY-MM.x") || s[8] != '-' || s[11] != '.' {
				t.Fatalf("ValidateIQN accepted %q without a date", s)
			}
			if m := s[9:11]; m < "01" || m > "12" {
				t.Fatalf("ValidateIQN accepted %q with month %s", s, m)
			}
		case strings.HasPrefix(s, "eui."):
			if len(s) != 20 || strings.Trim(s[4:], "0123456789ABCDEF") != "" {
				t.Fatalf("ValidateIQN accepted eui %q", s)
			}
		case strings.HasPrefix(s, "naa."):
			if (len(s) != 20 && len(s) != 36) || strings.Trim(s[4:], "0123456789ABCDEF") != "" {
				t.Fatalf("ValidateIQN accepted naa %q", s)
			}
		default:
			t.Fatalf("ValidateIQN accepted %q, neither iqn., eui. nor naa.", s)
		}
	})
}

func FuzzNormalizeMAC(f *testing.F) {
	for s := range macCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		norm, err := NormalizeMAC("f", s)
		if err != nil {
			wantFieldError(t, err, "f")
			if norm != "" {
				t.Fatalf("NormalizeMAC(%q) = %q with an error", s, norm)
			}
			return
		}
		if len(norm) != 17 || strings.ToLower(norm) != norm {
			t.Fatalf("NormalizeMAC(%q) = %q: not lowercase aa:bb:cc:dd:ee:ff", s, norm)
		}
		for i := range 17 {
			if (i%3 == 2) != (norm[i] == ':') || (i%3 != 2 && !strings.ContainsRune("0123456789abcdef", rune(norm[i]))) {
				t.Fatalf("NormalizeMAC(%q) = %q: not aa:bb:cc:dd:ee:ff", s, norm)
			}
		}
		if again, err := NormalizeMAC("f", norm); err != nil || again != norm {
			t.Fatalf("NormalizeMAC(%q) = %q, %v: a normal MAC must normalise to itself", norm, again, err)
		}
		// Only the case and the separator may change.
		if strings.ToLower(strings.ReplaceAll(s, "-", ":")) != norm {
			t.Fatalf("NormalizeMAC(%q) = %q changed more than case and separators", s, norm)
		}
	})
}

func FuzzParseSelector(f *testing.F) {
	for s := range validSelectors {
		f.Add(s, "r1")
	}
	for _, s := range invalidSelectors {
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, s, value string) {
		sel, err := ParseSelector(s)
		if err != nil {
			if sel != nil {
				t.Fatalf("ParseSelector(%q) = %v with error %v", s, sel, err)
			}
			return
		}
		for _, r := range sel {
			if r.key == "" || ValidateLabels("k", map[string]string{r.key: r.value}) != nil {
				t.Fatalf("ParseSelector(%q) gave invalid requirement %+v", s, r)
			}
		}
		canon := selectorString(sel)
		again, err := ParseSelector(canon)
		if err != nil || !slices.Equal(again, sel) {
			t.Fatalf("ParseSelector(%q) = %+v, %v; want %+v (from %q)", canon, again, err, sel, s)
		}
		// Labels built to satisfy the requirements one by one.
		labels := map[string]string{}
		for _, r := range sel {
			if r.op == "=" || r.op == "exists" {
				labels[r.key] = r.value
			}
		}
		sel.Matches(labels)
		sel.Matches(nil)
		sel.Matches(map[string]string{value: value})
		if len(sel) == 0 && !sel.Matches(map[string]string{value: value}) {
			t.Fatalf("empty selector %q does not match everything", s)
		}
		if len(sel) == 1 {
			r := sel[0]
			with, without := map[string]string{r.key: r.value}, map[string]string{}
			want := map[string][2]bool{"=": {true, false}, "!=": {false, true}, "exists": {true, false}, "!exists": {false, true}}[r.op]
			if sel.Matches(with) != want[0] || sel.Matches(without) != want[1] {
				t.Fatalf("%q.Matches(%v), Matches({}) = %v, %v; want %v", s, with, sel.Matches(with), sel.Matches(without), want)
			}
		}
	})
}

func FuzzValidateNode(f *testing.F) {
	f.Add("default", "node-01", "ubuntu", "", "52:54:00:12:34:56", "52-54-00-AB-CD-EF", "", "rack", "r1")
	f.Add("", "node-01", "ubuntu", "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309", "52:54:00:12:34:56", "52:54:00:12:34:56", "storage-1", "example.com/role", "worker")
	f.Add("Lab", "node_1", "", "iqn.2001-13.com.example", "x", "", "A", "", "-")
	f.Add("lab", "n", "i", "eui.02004567A425678D", "", "", "a", "k", "")
	f.Fuzz(func(t *testing.T, project, name, image, iqn, mac1, mac2, agent, labelKey, labelValue string) {
		n := &sanbootv1.Node{
			Metadata: &sanbootv1.ObjectMeta{Project: project, Name: name, Labels: map[string]string{labelKey: labelValue}},
			Spec:     &sanbootv1.NodeSpec{Image: image, InitiatorIqn: iqn, Macs: []string{mac1, mac2}, Agent: agent},
		}
		err := ValidateNode(n)
		for _, fe := range fieldErrors(err) {
			if fe.Field == "" || fe.Msg == "" {
				t.Fatalf("field error without field or message: %#v", fe)
			}
		}
		if err == nil {
			checkValidNode(t, n)
		}
	})
}

// checkValidNode states what every node ValidateNode accepted must satisfy.
func checkValidNode(t *testing.T, n *sanbootv1.Node) {
	t.Helper()
	m, s := n.GetMetadata(), n.GetSpec()
	if !isName(m.GetProject()) || !isName(m.GetName()) || !isName(s.GetImage()) {
		t.Fatalf("accepted node with names %q/%q image %q", m.GetProject(), m.GetName(), s.GetImage())
	}
	if s.GetAgent() != "" && !isName(s.GetAgent()) {
		t.Fatalf("accepted agent pin %q", s.GetAgent())
	}
	if s.GetInitiatorIqn() != "" && ValidateIQN("iqn", s.GetInitiatorIqn()) != nil {
		t.Fatalf("accepted initiator IQN %q", s.GetInitiatorIqn())
	}
	seen := map[string]bool{}
	for _, mac := range s.GetMacs() {
		if norm, err := NormalizeMAC("m", mac); err != nil || norm != mac {
			t.Fatalf("accepted MAC %q was not normalised (%q, %v)", mac, norm, err)
		}
		if seen[mac] {
			t.Fatalf("accepted MAC %q twice", mac)
		}
		seen[mac] = true
	}
	for k, v := range m.GetLabels() {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			t.Fatalf("accepted label %q=%q that is not UTF-8", k, v)
		}
	}
	// Idempotent: a second pass accepts it and changes nothing.
	before := proto.Clone(n)
	if err := ValidateNode(n); err != nil || !proto.Equal(before, n) {
		t.Fatalf("second ValidateNode: %v, changed: %v", err, !proto.Equal(before, n))
	}
	// It can be stored and read back.
	b, err := proto.Marshal(n)
	if err != nil {
		t.Fatalf("accepted node does not marshal: %v", err)
	}
	back := &sanbootv1.Node{}
	if err := proto.Unmarshal(b, back); err != nil || !proto.Equal(back, n) {
		t.Fatalf("accepted node does not round-trip: %v", err)
	}
	// Its keys and IQNs are well formed.
	p, name := m.GetProject(), m.GetName()
	if gp, gn, err := ProjectName(NodeKey(p, name)); err != nil || gp != p || gn != name {
		t.Fatalf("ProjectName(NodeKey(%q, %q)) = %q, %q, %v", p, name, gp, gn, err)
	}
	agent := s.GetAgent()
	if agent == "" {
		agent = "storage-1"
	}
	if ga, gp, gn, err := ParseAssignKey(AssignKey(agent, p, name)); err != nil || ga != agent || gp != p || gn != name {
		t.Fatalf("ParseAssignKey(AssignKey(%q, %q, %q)) = %q, %q, %q, %v", agent, p, name, ga, gp, gn, err)
	}
	for _, iqn := range []string{TargetIQN("", p, name), DefaultInitiatorIQN(p, name)} {
		if err := ValidateIQN("iqn", iqn); err != nil {
			t.Fatalf("derived IQN: %v", err)
		}
	}
}

// decodeSeeds are valid and invalid messages, marshalled.
func decodeSeeds(f *testing.F) {
	f.Helper()
	const sum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	node := validNode()
	bad := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Name: "-"}, Spec: &sanbootv1.NodeSpec{Macs: []string{"x", "x"}}}
	msgs := []proto.Message{
		node, bad, &sanbootv1.Node{},
		&sanbootv1.Assignment{Project: "default", Node: "node-01", Generation: 3, Spec: node.Spec,
			InitiatorIqn: DefaultInitiatorIQN("default", "node-01"), TargetIqn: TargetIQN("", "default", "node-01")},
		&sanbootv1.NodeStatus{Phase: PhaseReady, Agent: "storage-1", TargetIqn: TargetIQN("", "default", "node-01"),
			Portals: []string{"127.0.0.1:3260", "[::1]:3260"}, Lun: 0, ObservedGeneration: 3, CloneMode: "reflink"},
		validImage(),
		&sanbootv1.Image{Metadata: &sanbootv1.ObjectMeta{Name: "u"}, Spec: &sanbootv1.ImageSpec{SizeBytes: 512,
			Source: &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Url{Url: &sanbootv1.URLSource{Url: "https://x/u", Sha256: sum}}}}},
	}
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x12, 0x80})
}

// FuzzDecodeNode feeds arbitrary bytes, as read from etcd or the wire, to
// proto.Unmarshal as a Node, an Assignment and a NodeStatus, then validates
// what decoded.
func FuzzDecodeNode(f *testing.F) {
	decodeSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		n := &sanbootv1.Node{}
		if proto.Unmarshal(b, n) == nil {
			if ValidateNode(n) == nil {
				checkValidNode(t, n)
			}
		}
		a := &sanbootv1.Assignment{}
		if proto.Unmarshal(b, a) == nil {
			n := &sanbootv1.Node{Metadata: &sanbootv1.ObjectMeta{Project: a.GetProject(), Name: a.GetNode()}, Spec: a.GetSpec()}
			if ValidateNode(n) == nil {
				checkValidNode(t, n)
			} else if a.GetSpec() == nil && !hasField(ValidateNode(n), "spec") {
				t.Fatal("a node without spec validated without a spec error")
			}
			ValidateIQN("a", a.GetInitiatorIqn())
			ValidateIQN("a", a.GetTargetIqn())
		}
		st := &sanbootv1.NodeStatus{}
		if proto.Unmarshal(b, st) == nil {
			for _, p := range st.GetPortals() {
				ValidatePortal("p", p)
			}
			ValidateIQN("t", st.GetTargetIqn())
			// A status alone is no node: there is no metadata.
			if err := ValidateNode(&sanbootv1.Node{Status: st}); !hasField(err, "metadata") {
				t.Fatalf("a node with only a status: %v", err)
			}
		}
	})
}

// FuzzDecodeImage is FuzzDecodeNode for images.
func FuzzDecodeImage(f *testing.F) {
	decodeSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		im := &sanbootv1.Image{}
		if proto.Unmarshal(b, im) != nil {
			return
		}
		if err := ValidateImage(im); err != nil {
			return
		}
		s := im.GetSpec()
		if !isName(im.GetMetadata().GetProject()) || !isName(im.GetMetadata().GetName()) {
			t.Fatalf("accepted image names %q/%q", im.GetMetadata().GetProject(), im.GetMetadata().GetName())
		}
		if s.GetSizeBytes() <= 0 || s.GetSizeBytes()%512 != 0 || s.GetSizeBytes() > MaxImageSize || s.GetSource().GetKind() == nil {
			t.Fatalf("accepted image spec %v", s)
		}
		for _, a := range s.GetAgents() {
			if !isName(a) {
				t.Fatalf("accepted agent %q", a)
			}
		}
		before := proto.Clone(im)
		if err := ValidateImage(im); err != nil || !proto.Equal(before, im) {
			t.Fatalf("second ValidateImage: %v", err)
		}
		if _, err := proto.Marshal(im); err != nil {
			t.Fatalf("accepted image does not marshal: %v", err)
		}
	})
}

// FuzzKeys: for valid names, keys are injective and scoped prefixes hold
// exactly the keys of their scope.
func FuzzKeys(f *testing.F) {
	for _, n1 := range keyNames {
		for _, n2 := range keyNames[:3] {
			f.Add(n1[0], n1[1], n1[2], n2[0], n2[1], n2[2])
		}
	}
	f.Fuzz(func(t *testing.T, a1, b1, c1, a2, b2, c2 string) {
		for _, s := range []string{a1, b1, c1, a2, b2, c2} {
			if ValidateName("n", s) != nil {
				return
			}
		}
		n1, n2 := [3]string{a1, b1, c1}, [3]string{a2, b2, c2}
		for _, k := range keyKinds() {
			t1, t2 := trim(n1, k.arity), trim(n2, k.arity)
			key1, key2 := k.key(t1), k.key(t2)
			if (key1 == key2) != (t1 == t2) {
				t.Fatalf("%s: %q and %q give keys %q and %q", k.name, t1, t2, key1, key2)
			}
			if got, err := k.parse(key2); err != nil || got != t2 {
				t.Fatalf("%s: parse(%q) = %q, %v", k.name, key2, got, err)
			}
			if k.arity > 1 && strings.HasPrefix(key2, k.prefixes(t1)[0]) != (t1[0] == t2[0]) {
				t.Fatalf("%s: key %q vs prefix %q", k.name, key2, k.prefixes(t1)[0])
			}
		}
		if (TargetIQN("", a1, b1) == TargetIQN("", a2, b2)) != (a1 == a2 && b1 == b2) {
			t.Fatalf("TargetIQN(%q, %q) vs (%q, %q)", a1, b1, a2, b2)
		}
	})
}

func hasField(err error, field string) bool {
	for _, fe := range fieldErrors(err) {
		if fe.Field == field {
			return true
		}
	}
	return false
}

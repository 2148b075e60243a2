package api

import (
	"slices"
	"strings"
	"testing"
)

// validSelectors maps a selector to the requirements it parses into.
var validSelectors = map[string]Selector{
	"":                        nil,
	"   ":                     nil,
	"rack=r1":                 {{key: "rack", value: "r1", op: "="}},
	"rack==r1":                {{key: "rack", value: "r1", op: "="}},
	"rack!=r1":                {{key: "rack", value: "r1", op: "!="}},
	"rack":                    {{key: "rack", op: "exists"}},
	"!rack":                   {{key: "rack", op: "!exists"}},
	"! rack":                  {{key: "rack", op: "!exists"}},
	"rack=":                   {{key: "rack", value: "", op: "="}},
	"rack!=":                  {{key: "rack", value: "", op: "!="}},
	" rack = r1 , os != win ": {{key: "rack", value: "r1", op: "="}, {key: "os", value: "win", op: "!="}},
	"example.com/role=worker": {{key: "example.com/role", value: "worker", op: "="}},
	"a=b,c!=d,e,!f": {
		{key: "a", value: "b", op: "="},
		{key: "c", value: "d", op: "!="},
		{key: "e", op: "exists"},
		{key: "f", op: "!exists"},
	},
	"a=b,a=c":      {{key: "a", value: "b", op: "="}, {key: "a", value: "c", op: "="}},
	"Rack=R_1.x-y": {{key: "Rack", value: "R_1.x-y", op: "="}},
}

var invalidSelectors = []string{
	",",
	"a,",
	",a",
	"a,,b",
	"=b",
	"!=b",
	"==b",
	"!",
	"!!a",
	"!a=b",
	"a=b=c",
	"a!==b",
	"a=!b",
	"a===b",
	"a b=c",
	"a=b c",
	"a!b",
	"a in (b,c)",
	"a notin (b)",
	"a>1",
	"-a=b",
	"a-=b",
	"a=-b",
	"a=b-",
	"ü=b",
	"a=ü",
	"a/b/c=d",
	strings.Repeat("a", 64) + "=b",
	"a=" + strings.Repeat("b", 64),
	"a=b\x00",
	"\xff",
}

func TestParseSelector(t *testing.T) {
	for s, want := range validSelectors {
		got, err := ParseSelector(s)
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", s, err)
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("ParseSelector(%q) = %+v, want %+v", s, got, want)
		}
		// The canonical form parses back to the same selector.
		again, err := ParseSelector(selectorString(got))
		if err != nil || !slices.Equal(again, got) {
			t.Errorf("ParseSelector(%q) = %+v, %v; want %+v", selectorString(got), again, err, got)
		}
	}
	for _, s := range invalidSelectors {
		sel, err := ParseSelector(s)
		if err == nil {
			t.Errorf("ParseSelector(%q) = %+v, want an error", s, sel)
			continue
		}
		if sel != nil {
			t.Errorf("ParseSelector(%q) returned %+v with its error", s, sel)
		}
		if msg := err.Error(); !strings.Contains(msg, "key=value, key!=value, key or !key") {
			t.Errorf("ParseSelector(%q): message %q does not say what is allowed", s, msg)
		}
	}
}

func TestSelectorMatches(t *testing.T) {
	labels := map[string]string{"rack": "r1", "os": "linux", "empty": "", "example.com/role": "worker"}
	cases := map[string]bool{
		"":                         true,
		"rack=r1":                  true,
		"rack==r1":                 true,
		"rack=r2":                  false,
		"rack!=r2":                 true,
		"rack!=r1":                 false,
		"missing!=x":               true, // != matches a missing label, as in kubectl
		"missing=x":                false,
		"rack":                     true,
		"missing":                  false,
		"!missing":                 true,
		"!rack":                    false,
		"empty":                    true,
		"empty=":                   true,
		"!empty":                   false,
		"empty!=":                  false,
		"missing=":                 false,
		"Rack=r1":                  false, // keys are case sensitive
		"rack=R1":                  false, // so are values
		"rack=r1,os=linux":         true,
		"rack=r1,os=windows":       false,
		"rack=r1,os!=windows,!gpu": true,
		"rack=r1,a=b,a=c":          false,
		"example.com/role=worker":  true,
		"role=worker":              false,
	}
	for s, want := range cases {
		sel, err := ParseSelector(s)
		if err != nil {
			t.Fatalf("ParseSelector(%q): %v", s, err)
		}
		if got := sel.Matches(labels); got != want {
			t.Errorf("%q.Matches(%v) = %v, want %v", s, labels, got, want)
		}
	}
	// Nil and empty label sets.
	for s, want := range map[string]bool{"": true, "!a": true, "a!=b": true, "a": false, "a=": false} {
		sel, err := ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := sel.Matches(nil); got != want {
			t.Errorf("%q.Matches(nil) = %v, want %v", s, got, want)
		}
		if got := sel.Matches(map[string]string{}); got != want {
			t.Errorf("%q.Matches({}) = %v, want %v", s, got, want)
		}
	}
}

// selectorString writes sel in the canonical form ParseSelector reads.
func selectorString(sel Selector) string {
	parts := make([]string, 0, len(sel))
	for _, r := range sel {
		switch r.op {
		case "=":
			parts = append(parts, r.key+"="+r.value)
		case "!=":
			parts = append(parts, r.key+"!="+r.value)
		case "exists":
			parts = append(parts, r.key)
		case "!exists":
			parts = append(parts, "!"+r.key)
		default:
			panic("unknown selector op " + r.op)
		}
	}
	return strings.Join(parts, ",")
}

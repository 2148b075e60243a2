package api

import (
	"fmt"
	"strings"
)

// Selector is a parsed label selector: "a=b,c!=d,e,!f" (equality-based, as
// in kubectl).
type Selector []requirement

type requirement struct {
	key, value string
	op         string // "=", "!=", "exists", "!exists"
}

// ParseSelector parses s; an empty s selects everything.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		var r requirement
		switch {
		case strings.Contains(part, "!="):
			k, v, _ := strings.Cut(part, "!=")
			r = requirement{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: "!="}
		case strings.Contains(part, "=="):
			k, v, _ := strings.Cut(part, "==")
			r = requirement{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: "="}
		case strings.Contains(part, "="):
			k, v, _ := strings.Cut(part, "=")
			r = requirement{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: "="}
		case strings.HasPrefix(part, "!"):
			r = requirement{key: strings.TrimSpace(part[1:]), op: "!exists"}
		default:
			r = requirement{key: part, op: "exists"}
		}
		if err := ValidateLabels("labelSelector", map[string]string{r.key: r.value}); err != nil || r.key == "" {
			return nil, fmt.Errorf("label selector %q: %q is not key=value, key!=value, key or !key with valid label keys and values", s, part)
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s {
		v, ok := labels[r.key]
		switch r.op {
		case "=":
			if !ok || v != r.value {
				return false
			}
		case "!=":
			if ok && v == r.value {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		case "!exists":
			if ok {
				return false
			}
		}
	}
	return true
}

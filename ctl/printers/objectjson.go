package printers

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/manifest"
)

// ObjectJSON is the JSON of one object as get -o json|yaml|jsonpath prints
// it.
//
// What sanboot reports is printed whole, zero values included, so that a
// script reading .status.lun, .status.portals, a condition's .status or an
// agent's .nodes gets 0, [] or false rather than null: a node's and an
// image's status, and an agent entirely. What the user writes (metadata
// and spec) is printed as set, as protojson does, so that get -o yaml
// reads like the manifest it came from. An object or a time that is not
// set (a status not reported yet, a deleteTime) is left out in both.
//
// A node or an image starts with its apiVersion and kind, as in a
// manifest, so that get -o yaml | apply -f - applies it again unchanged.
func ObjectJSON(m proto.Message) ([]byte, error) {
	switch v := m.(type) {
	case *sanbootv1.Agent:
		return protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(v)
	case *sanbootv1.Node:
		return manifestJSON(manifest.KindNode, v.GetMetadata(), v.GetSpec(), v.GetStatus())
	case *sanbootv1.Image:
		return manifestJSON(manifest.KindImage, v.GetMetadata(), v.GetSpec(), v.GetStatus())
	}
	return protojson.Marshal(m)
}

// manifestJSON writes {"apiVersion", "kind", "metadata", "spec", "status"},
// leaving out the parts that are not set (nil or a typed nil).
func manifestJSON(kind string, meta, spec, status proto.Message) ([]byte, error) {
	var b bytes.Buffer
	head, err := json.Marshal(struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}{manifest.APIVersion, kind})
	if err != nil {
		return nil, err
	}
	b.Write(head[:len(head)-1]) // without the closing brace
	for _, f := range []struct {
		name  string
		value proto.Message
		whole bool
	}{{"metadata", meta, false}, {"spec", spec, false}, {"status", status, true}} {
		if f.value == nil || !f.value.ProtoReflect().IsValid() {
			continue
		}
		v, err := protojson.MarshalOptions{EmitDefaultValues: f.whole}.Marshal(f.value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		fmt.Fprintf(&b, `,%q:`, f.name)
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

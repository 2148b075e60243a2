package manifest_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/manifest"
)

// readOnly are the fields a manifest may carry (what get -o yaml printed)
// but that the decoder ignores: the API sets them. Every other field of a
// Node or an Image, down to the sources, must be decodable: a field added
// to the proto fails TestDecodesEveryField until the decoder reads it or
// it is named here.
var readOnly = map[protoreflect.FullName]string{
	"sanboot.v1.Node.status":             "written by the agents and the scheduler",
	"sanboot.v1.Node.last_boot_fetch":    "written by the boot server",
	"sanboot.v1.Image.status":            "written by the agents",
	"sanboot.v1.ObjectMeta.generation":   "set by the API server",
	"sanboot.v1.ObjectMeta.create_time":  "set by the API server",
	"sanboot.v1.ObjectMeta.delete_time":  "set by the API server",
	"sanboot.v1.ObjectMeta.revision":     "set by the API server",
	"sanboot.v1.ObjectMeta.uid":          "set by the API server",
	"sanboot.v1.ObjectMeta.force_delete": "set by delete --force",
	"sanboot.v1.ImageSpec.parent":        "set by the API server from the source",
}

// TestDecodesEveryField walks the fields of Node and Image (metadata, spec
// and the image sources) through protoreflect: for each it writes a
// document that sets only that field, decodes it, and checks the decoded
// object holds the value. A field is either decodable or named read-only.
func TestDecodesEveryField(t *testing.T) {
	for _, root := range []proto.Message{&sanbootv1.Node{}, &sanbootv1.Image{}} {
		md := root.ProtoReflect().Descriptor()
		kind := string(md.Name())
		walk(t, kind, md, nil)
	}
}

// walk checks every field of md, a message reached from the root kind
// through the fields of path.
func walk(t *testing.T, kind string, md protoreflect.MessageDescriptor, path []protoreflect.FieldDescriptor) {
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if _, ok := readOnly[fd.FullName()]; ok {
			continue
		}
		at := append(slices.Clone(path), fd)
		if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() && !fd.IsList() {
			if fd.Message().Fields().Len() == 0 { // a oneof member such as blank: {}
				check(t, kind, at, "{}")
				continue
			}
			walk(t, kind, fd.Message(), at)
			continue
		}
		check(t, kind, at, sample(t, fd))
	}
}

// sample is a YAML value for fd that the decoder accepts without
// validation.
func sample(t *testing.T, fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsMap():
		return `{k1: "v1"}`
	case fd.IsList() && fd.Kind() == protoreflect.StringKind:
		return `["v1"]`
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return `"v1"`
	case protoreflect.BoolKind:
		return "true"
	case protoreflect.Int64Kind:
		return "1024"
	}
	t.Fatalf("%s: no sample value for a %v field: teach this test one", fd.FullName(), fd.Kind())
	return ""
}

// check decodes a document of kind whose field at path is value (in flow
// style) and fails unless the decoded object has the field set.
func check(t *testing.T, kind string, path []protoreflect.FieldDescriptor, value string) {
	t.Helper()
	names := make([]string, len(path))
	for i, fd := range path {
		names[i] = fd.JSONName()
	}
	where := kind + "." + strings.Join(names, ".")
	// The value, wrapped in one flow mapping per level below the top one.
	v := value
	for i := len(names) - 1; i >= 1; i-- {
		v = fmt.Sprintf("{%s: %s}", names[i], v)
	}
	top := map[string]string{"metadata": "{name: n1}", "spec": "{}"}
	switch {
	case names[0] == "metadata" && len(names) > 1 && names[1] == "name":
		top["metadata"] = v
	case names[0] == "metadata":
		top["metadata"] = "{name: n1, " + strings.TrimPrefix(v, "{")
	default:
		top[names[0]] = v
	}
	doc := fmt.Sprintf("apiVersion: sanboot.io/v1\nkind: %s\n", kind)
	for _, k := range slices.Sorted(maps.Keys(top)) {
		doc += k + ": " + top[k] + "\n"
	}
	objs, err := manifest.Decode([]byte(doc), "in.yaml", t.TempDir(), "default", false)
	if err != nil || len(objs) != 1 {
		t.Errorf("%s is not decodable (%d objects, %v); decode it in ctl/manifest/decode.go or name it read-only here. The document:\n%s",
			where, len(objs), err, doc)
		return
	}
	var m protoreflect.Message
	if objs[0].Node != nil {
		m = objs[0].Node.ProtoReflect()
	} else {
		m = objs[0].Image.ProtoReflect()
	}
	for i, fd := range path {
		if !m.Has(fd) {
			t.Errorf("%s: decoded without error but the object does not hold it (%s is unset); the document:\n%s", where, fd.Name(), doc)
			return
		}
		if i < len(path)-1 {
			m = m.Get(fd).Message()
		}
	}
}

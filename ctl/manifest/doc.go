// Package manifest reads the files that "sanbootctl apply", "diff" and
// "delete -f" take: multi-document YAML or JSON with objects of kind Node
// and Image (apiVersion sanboot.io/v1, metadata name/project/labels, spec).
//
// It walks go-yaml's syntax tree itself instead of unmarshalling into
// structs, so that every problem (a syntax error, an unknown field, a wrong
// type, a value the API would refuse) is reported as file:line:column with
// the field path, and all of them at once. Values are checked with the same
// api.ValidateNode and api.ValidateImage the API server runs; their field
// paths are mapped back to the positions the fields had in the file.
//
// Read-only fields that "get -o yaml" prints (metadata.generation,
// createTime, uid, ..., status, spec.parent) are accepted and ignored, so
// that the output of get can be applied again.
package manifest

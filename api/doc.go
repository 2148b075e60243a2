// Package api is the contract between sanboot's programs: the etcd key
// layout (keys.go), the validation of every name a user can send
// (validate.go), the status phases (phases.go) and, in api/v1, the protobuf
// messages and the gRPC service.
//
// The control plane and the agent both import this package; neither imports
// the other.
package api

// Package apiserver implements the Sanboot gRPC service (api/v1) over etcd.
//
// Writes validate with api.ValidateNode and api.ValidateImage (an invalid
// request is codes.InvalidArgument and writes nothing) and go to etcd in
// transactions that compare mod_revisions; a lost race is codes.Aborted.
//
// Reads: Get and List read etcd directly, in one transaction per request so
// that the joined records (node, placement, status, agent liveness) come
// from one revision. A client therefore always sees its own writes.
// WatchNodes streams from one in-memory cache per server, fed by the
// member's informer (package informer: one etcd watch of api.Prefix per
// member, whose decoded records the boot server and the scheduler read
// too, so the joined view is consistent at every revision): every stream
// shares it and none opens its own etcd watch. A new stream first waits (briefly) for the cache to reach
// the revision etcd had when the stream began, so its initial events show
// the client's earlier writes. Each stream has a bounded buffer; a stream
// that falls that far behind is ended with codes.ResourceExhausted, so that
// its client watches again instead of slowing the others. Events are sent
// only when a node's joined view actually changed.
//
// Node, image and agent views are joined by package view, the same code
// for both paths.
//
// Image bytes never go into etcd. UploadImage stages them on this member
// (package staging, in Config.Uploads; qcow2 converted to raw) and agents
// fetch them with ReadUpload, which resumes at an offset. Each member
// collects its own staged uploads (uploadgc.go): one goes once every image
// that refers to it has a Ready replica with its sha256 on every agent it
// wants, or UploadTTL (24h) after staging when no image refers to it.
// ExportImage asks the holding agent through an ExportRequest key
// (api.ExportKey, under a lease of this member) and relays what the agent
// sends with PushExport; nothing connects to an agent.
package apiserver

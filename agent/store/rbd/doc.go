// Package rbd is a store.Store that keeps images and node disks as Ceph RBD
// images in one pool, so that a disk outlives any storage host: every agent
// that shares the pool can serve it (tgt's rbd backing store).
//
//	img.<project>.<image>    a golden image, with the protected snapshot
//	                         "sanboot" that its disks are cloned from
//	disk.<project>.<node>    a node's disk: a clone of img...@sanboot
//	tmp.<agent>.<random>     an image or disk being made by that agent
//	old.<id>.<name>          an image or disk deleted while clones of it
//	                         live; removed with its last clone
//
// Names are api.ValidateName labels (a-z, 0-9, '-'), so the dots separate
// them without ambiguity. Paths are store.RBDPath(pool, name).
//
// The rbd CLI, not librbd through cgo (github.com/ceph/go-ceph): the agent
// stays one static Go binary (CGO_ENABLED=0, as the LIO guest needs), the
// build needs no librbd-dev, no pinned go-ceph and no build tag matching
// the cluster's release, and a fresh storage host needs only ceph-common.
// The price is ~50 ms of process start per call: a clone takes a few calls
// (~0.3 s), still constant whatever the image's size. Every call runs with
// the agent's cephx user (--id), which needs only `profile rbd` on the
// pool; its exit status is the errno, which errors.Is tests
// (syscall.ENOENT, EEXIST, EBUSY, ENOTEMPTY).
//
// Crash safety. Every image and disk is made under a tmp.<agent>.* name,
// described (image-meta sanboot.v1: kind, size, source, owner, ...),
// snapshotted and protected when it is an image, and renamed to its final
// name last: rbd rename is atomic and refuses an existing name. A crash
// leaves either the finished image under its name or a tmp image, which
// the same agent removes when it starts again. Two agents that make the
// same image at once both finish; the second rename fails with EEXIST and
// that agent removes its own copy.
//
// Deletion never breaks a clone. An image whose snapshot has clones (node
// disks, images copied from it) and a disk whose snapshot became an image
// are renamed to old.<id>.<name>: they no longer exist for sanboot, their
// clones keep reading through them, and the deletion of the last clone
// removes them; every deletion (and New) also sweeps the old.* images
// whose clones are gone, which finishes what a crash or two agents
// deleting at once left half done. The
// control plane refuses to delete an image that nodes use before the store
// sees it (apiserver: "used by nodes ...").
//
// Clone depth. An image made from a node's snapshot (or a copy) is a clone
// of a clone; every level costs reads that miss. An image whose chain of
// parents is longer than Options.MaxCloneDepth is flattened (its data
// copied from its parents) in the background once published, and before
// it is published past twice that depth (flatten.go).
//
// Space. Capacity is the pool's share of the cluster (ceph df: raw bytes
// over the pool's replica count) and free space the pool's max_avail. As
// the store.Store contract asks, a disk larger than the free space is
// refused with store.ErrNoSpace.
package rbd

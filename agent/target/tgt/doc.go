// Package tgt is the target.Driver for the Linux SCSI target framework's
// user-space daemon tgtd (Debian package "tgt"), driven with tgtadm's
// requests. It is how sanboot serves disks on hosts whose kernel has no
// LIO.
//
// The driver sends tgtadm's requests itself on tgtd's control socket
// (ipc.go: the same bytes as tgtadm, without a process each), or runs a
// tgtadm executable if Config.Tgtadm names one, and validates every value
// (target.Validate) before it becomes a parameter. It keeps little state
// of its own: a fingerprint of the CHAP secrets it set, and its last
// listing of tgtd for a burst of new targets; it reads tgtd's
// configuration back (--op show) and converges it.
//
// Facts about tgtd 1.0.85 (Debian 12) the driver is built around:
//
//   - LUN 0 of every target is tgt's controller; the disk is LUN 1. The
//     VPD serial (scsi_sn) and thin provisioning can only be set with
//     "--op update" after the LUN exists.
//   - Portals belong to the whole tgtd, not to a target: Ensure checks that
//     tgtd serves every portal the target asks for and fails if not; List
//     reports tgtd's portals for every target.
//   - CHAP accounts are global: one user name, one secret, bound to any
//     number of targets. A target asks for CHAP as soon as one incoming
//     account is bound. See Driver for how sanboot owns accounts.
//   - Unbinding an incoming account that is not the last one bound to a
//     target leaves a hole that makes the next "--op show" crash tgtd: the
//     driver only ever removes incoming accounts from the end.
//   - "--op delete --force" fails while commands are in flight: the driver
//     closes the ACL and drops the target's connections first.
//   - tgtd ignores SIGTERM; Managed stops it with "--mode system --op
//     delete" after deleting every target.
package tgt

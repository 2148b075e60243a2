// Package lio is the target.Driver for LIO, the Linux kernel's SCSI target,
// driven through configfs (/sys/kernel/config/target) with mkdir, rmdir,
// symlink and one write(2) per attribute, the way rtslib does, without
// targetcli and without saveconfig.json: etcd is the saved configuration,
// and after a reboot empties configfs the agent builds every target again.
//
// For each target it builds, in this order: a fileio backstore (iblock for
// a block device) named after the target's IQN in an HBA directory of its
// own (its index a hash of the IQN, probing linearly past taken indexes,
// so that finding it costs the same with 10 targets or 10,000), with the
// target's VPD unit serial and thin provisioning
// (emulate_tpu, emulate_tpws); the target and tpgt_1; the portals; LUN 0
// linked to the backstore; generate_node_acls=0 and one explicit ACL per
// initiator, with LUN 0 mapped; the CHAP values on each ACL and the
// portal group's authentication attribute; enable, last. Teardown runs in
// reverse. Every call reads configfs first and writes only what differs.
//
// Facts about Debian 12's 6.1 kernel the driver is built around (checked
// in a VM, see hack/e2e-lio.sh and kernel_test.go):
//
//   - target/iscsi exists only once something mkdirs it.
//   - A backstore takes its control string before enable, and enable
//     once (EEXIST after). A control string written after enable is
//     taken (info shows it) but the open file stays: the driver never
//     writes it after enable; another backing file or size means another
//     backstore.
//   - Writing emulate_tpu or emulate_tpws before the backstore is enabled
//     oopses the kernel (NULL pointer in fd_configure_unmap,
//     target_configure_unmap_from_queue). After the LUN exists they can
//     still change; the VPD serial cannot (EINVAL).
//   - fileio creates a missing backing file and serves fd_dev_size
//     whatever the file's size: the driver checks the file first.
//   - A new portal group requires authentication (attribute 1) by
//     default; writing 1 to its enable twice is EINVAL.
//   - CHAP values are kept as written: a trailing newline becomes part of
//     the secret. "NULL" clears a value, and so does any value that
//     starts with "NULL" (then every login fails: "CHAP user or password
//     not set"), so Ensure refuses such values.
//   - A LUN that an ACL maps cannot be removed (EBUSY), nor a backstore a
//     LUN links to; a LUN whose backstore link goes loses its mapped LUNs
//     in the kernel while their directories stay. Disabling the portal
//     group ends its sessions; removing an ACL ends its initiator's.
//   - np/ directory names are kept as given ("[::1]:3260" and
//     "[0:0:0:0:0:0:0:1]:3260" both work), so portals are compared parsed.
//
// Files: driver.go (Driver, List, Sessions), ensure.go (Ensure: its
// checks and the seven numbered steps of ensure), delete.go (Delete),
// configfs.go (the file system interface, operation counts, and the
// mkdir/write/remove helpers that retry EBUSY), read.go (configfs read
// into the driver's model), layout.go (paths and names), dump.go
// (sanboot-agent lio dump).
//
// The root is a parameter (Config.Root), so that unit tests run the
// driver against a fake configfs in a temp dir; the tests against the
// real kernel run in a VM (kernel_test.go, hack/e2e-lio.sh).
package lio

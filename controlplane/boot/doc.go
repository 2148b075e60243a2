// Package boot is the control plane's boot server: it tells bare-metal
// nodes, over HTTP, how to boot from their disks, as iPXE scripts.
//
//	GET /boot.ipxe               generic script for DHCP to hand out: it
//	                             chains to /boot?mac=${net0/mac:hexhyp}
//	GET /boot?mac=MAC            the script of the node whose spec.macs
//	                             holds MAC
//	GET /boot/PROJECT/NODE       the script of that node
//
// A node that is Ready gets a script that sets its initiator IQN and, with
// CHAP, its credentials (and the target's, with mutual CHAP), then
// sanboots from every portal of its agent (iPXE multipath). Every other
// case (unknown MAC, node not Ready yet, agent down, no valid boot token)
// gets a script that says why on the console and fetches the script
// again after a while, backing off from 1 to 32 s: the node waits for its
// disk and no operator is needed.
//
// Everything that goes into a script is validated (names, IQNs, portals,
// credentials) or reduced to harmless characters (status messages), so
// that no record can inject iPXE commands.
//
// With boot tokens (Settings.Tokens) a node's script is served only to a
// URL that carries the node's current one-time token, issued by the API
// (GetBootScript) and kept in etcd as a hash under a lease; the token is
// consumed when the script with the node's credentials is served. See
// docs/boot.md for the trust model.
//
// Plan and Settings.Render are pure and shared with the API server, so
// `sanbootctl boot-script` shows exactly what the node gets.
package boot

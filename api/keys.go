package api

import (
	"fmt"
	"slices"
	"strings"
)

// Prefix is the root of every key sanboot writes in etcd. The version lets a
// future layout live beside this one during an upgrade.
const Prefix = "/sanboot/v1/"

// The key layout. Values are protobuf messages from api/v1.
//
//	key                                          value         written by
//	images/<project>/<image>                     Image (spec)  API server
//	imagereplicas/<agent>/<project>/<image>      ImageReplica  that agent
//	nodes/<project>/<node>                       Node (spec)   API server
//	placements/<project>/<node>                  Placement     scheduler (leader)
//	assign/<agent>/<project>/<node>              Assignment    scheduler (leader)
//	nodestatus/<agent>/<project>/<node>          NodeStatus    the assigned agent
//	macs/<mac>                                   ObjectMeta    API server, with the node that lists the MAC
//	                                                           (project, name, uid): one node per MAC, all projects
//	secrets/<project>/<node>                     ChapSecret    API server (never returned by reads)
//	boottokens/<project>/<node>                  BootToken     API server, leased; deleted by the boot server on use
//	bootfetches/<project>/<node>                 BootFetch     boot server, on every request for the node's script; deleted with the node
//	agents/<agent>                               AgentRecord   that agent
//	alive/<agent>                                (empty)       that agent, under its lease
//	members/<member>                             Member        that control-plane member, leased
//	exports/<agent>/<id>                         ExportRequest the API server serving the export, leased
//	election/controllers/                        (etcd concurrency.Election)
//
// The writer of a spec and the writer of a status never share a key, so they
// never race. Every write is a transaction that compares mod_revision.
//
// Every key an agent writes starts with a prefix that names it (agents/,
// alive/, imagereplicas/<agent>/, nodestatus/<agent>/), so that etcd's
// prefix permissions confine each agent to its own keys (package
// controlplane/etcdauth). A reader finds a node's status through the
// node's placement: the status that counts is the one of the placement's
// agent; the scheduler deletes any other agent's status of the node. Keys
// of the older layout (replicas/<project>/<image>/<agent>,
// nodestatus/<project>/<node>) are moved on a member's start (package
// controlplane/migrate).
const (
	kindImages     = "images/"
	kindReplicas   = "imagereplicas/"
	kindNodes      = "nodes/"
	kindPlacements = "placements/"
	kindAssign     = "assign/"
	kindNodeStatus = "nodestatus/"
	kindSecrets    = "secrets/"
	kindBootTokens = "boottokens/"
	kindBootFetch  = "bootfetches/"
	kindAgents     = "agents/"
	kindAlive      = "alive/"
	kindMembers    = "members/"
	kindMemberAdds = "memberadds/"
	kindExports    = "exports/"
	kindMACs       = "macs/"

	// ElectionPrefix is where control-plane members campaign to run the
	// controllers.
	ElectionPrefix = Prefix + "election/controllers/"
)

// ImagesPrefix is the prefix of every image in project, or of all images
// when project is empty.
func ImagesPrefix(project string) string { return scoped(kindImages, project) }

// ImageKey is where an image's spec lives.
func ImageKey(project, name string) string { return Prefix + kindImages + project + "/" + name }

// ReplicasPrefix is the prefix of every image replica, of every agent.
func ReplicasPrefix() string { return Prefix + kindReplicas }

// AgentReplicasPrefix is the prefix of the replicas agent reports: the
// keys it may write.
func AgentReplicasPrefix(agent string) string { return Prefix + kindReplicas + agent + "/" }

// ReplicaKey is where agent reports its replica of an image.
func ReplicaKey(project, image, agent string) string {
	return AgentReplicasPrefix(agent) + project + "/" + image
}

// NodesPrefix is the prefix of every node in project, or of all nodes.
func NodesPrefix(project string) string { return scoped(kindNodes, project) }

// NodeKey is where a node's spec lives.
func NodeKey(project, name string) string { return Prefix + kindNodes + project + "/" + name }

// PlacementsPrefix is the prefix of every placement in project, or of all.
func PlacementsPrefix(project string) string { return scoped(kindPlacements, project) }

// PlacementKey is where the scheduler records its decision for a node.
func PlacementKey(project, node string) string {
	return Prefix + kindPlacements + project + "/" + node
}

// NodeStatusPrefix is the prefix of every node status, of every agent.
func NodeStatusPrefix() string { return Prefix + kindNodeStatus }

// AgentNodeStatusPrefix is the prefix of the node statuses agent reports:
// the keys it may write.
func AgentNodeStatusPrefix(agent string) string { return Prefix + kindNodeStatus + agent + "/" }

// NodeStatusKey is where agent reports the status of node, assigned to it.
// Only the status of the node's placed agent counts.
func NodeStatusKey(project, node, agent string) string {
	return AgentNodeStatusPrefix(agent) + project + "/" + node
}

// MACsPrefix is the prefix of the MAC index.
func MACsPrefix() string { return Prefix + kindMACs }

// MACKey is where the node that owns mac (normalized, NormalizeMAC) is
// recorded: a MAC boots one node, across projects.
func MACKey(mac string) string { return Prefix + kindMACs + mac }

// SecretsPrefix is the prefix of every node's CHAP secret in project, or of all.
func SecretsPrefix(project string) string { return scoped(kindSecrets, project) }

// SecretKey is where a node's CHAP credentials live.
func SecretKey(project, node string) string {
	return Prefix + kindSecrets + project + "/" + node
}

// BootTokenKey is where a node's one-time boot token (its hash) lives.
func BootTokenKey(project, node string) string {
	return Prefix + kindBootTokens + project + "/" + node
}

// BootFetchKey is where the last request for a node's boot script is
// recorded.
func BootFetchKey(project, node string) string {
	return Prefix + kindBootFetch + project + "/" + node
}

// AssignPrefix is the prefix an agent watches: its own assignments only.
// With an empty agent it is the prefix of every assignment.
func AssignPrefix(agent string) string { return scoped(kindAssign, agent) }

// AssignKey is one assignment of node to agent.
func AssignKey(agent, project, node string) string {
	return Prefix + kindAssign + agent + "/" + project + "/" + node
}

// AgentsPrefix is the prefix of every agent record.
func AgentsPrefix() string { return Prefix + kindAgents }

// AgentKey is where an agent keeps its record.
func AgentKey(name string) string { return Prefix + kindAgents + name }

// AlivePrefix is the prefix of every agent liveness key.
func AlivePrefix() string { return Prefix + kindAlive }

// AliveKey exists while the agent's lease is kept alive.
func AliveKey(name string) string { return Prefix + kindAlive + name }

// MembersPrefix is the prefix of every control-plane member registration.
func MembersPrefix() string { return Prefix + kindMembers }

// MemberKey is where a control-plane member registers its API address.
func MemberKey(name string) string { return Prefix + kindMembers + name }

// MemberAddKey holds the name given to an etcd member (id in hex) added
// with sanbootctl member add, until the member starts and etcd knows its
// name.
func MemberAddKey(id string) string { return Prefix + kindMemberAdds + id }

// ExportsPrefix is the prefix an agent watches for export requests: its
// own only. With an empty agent it is the prefix of every export request.
func ExportsPrefix(agent string) string { return scoped(kindExports, agent) }

// ExportKey is where an API server asks agent to push an image (export id).
func ExportKey(agent, id string) string { return Prefix + kindExports + agent + "/" + id }

// ParseExportKey splits an export request key into agent and export id.
func ParseExportKey(key string) (agent, id string, err error) {
	rest, ok := strings.CutPrefix(key, Prefix+kindExports)
	if !ok {
		return "", "", fmt.Errorf("key %q is not an export key", key)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 2 || slices.Contains(parts, "") {
		return "", "", fmt.Errorf("key %q is not exports/<agent>/<id>", key)
	}
	return parts[0], parts[1], nil
}

func scoped(kind, scope string) string {
	if scope == "" {
		return Prefix + kind
	}
	return Prefix + kind + scope + "/"
}

// ProjectName splits a key of the form <Prefix><kind><project>/<name> (nodes,
// images, placements, secrets) into project and name.
func ProjectName(key string) (project, name string, err error) {
	rest, ok := strings.CutPrefix(key, Prefix)
	if !ok {
		return "", "", fmt.Errorf("key %q is not under %s", key, Prefix)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || slices.Contains(parts, "") {
		return "", "", fmt.Errorf("key %q is not <kind>/<project>/<name>", key)
	}
	return parts[1], parts[2], nil
}

// ParseAssignKey splits an assignment key into agent, project and node.
func ParseAssignKey(key string) (agent, project, node string, err error) {
	rest, ok := strings.CutPrefix(key, Prefix+kindAssign)
	if !ok {
		return "", "", "", fmt.Errorf("key %q is not an assignment key", key)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || slices.Contains(parts, "") {
		return "", "", "", fmt.Errorf("key %q is not assign/<agent>/<project>/<node>", key)
	}
	return parts[0], parts[1], parts[2], nil
}

// ParseReplicaKey splits a replica key into project, image and agent.
func ParseReplicaKey(key string) (project, image, agent string, err error) {
	return parseAgentKey(key, kindReplicas, "imagereplicas/<agent>/<project>/<image>")
}

// ParseNodeStatusKey splits a node status key into project, node and agent.
func ParseNodeStatusKey(key string) (project, node, agent string, err error) {
	return parseAgentKey(key, kindNodeStatus, "nodestatus/<agent>/<project>/<node>")
}

// parseAgentKey splits <Prefix><kind><agent>/<project>/<name>.
func parseAgentKey(key, kind, shape string) (project, name, agent string, err error) {
	rest, ok := strings.CutPrefix(key, Prefix+kind)
	if !ok {
		return "", "", "", fmt.Errorf("key %q is not under %s", key, Prefix+kind)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || slices.Contains(parts, "") {
		return "", "", "", fmt.Errorf("key %q is not %s", key, shape)
	}
	return parts[1], parts[2], parts[0], nil
}

// LastSegment returns what follows the last "/" of key: the name in
// agents/<name>, alive/<name> and members/<name>.
func LastSegment(key string) string {
	return key[strings.LastIndexByte(key, '/')+1:]
}

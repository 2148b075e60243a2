package api

// Node phases, as reported in NodeStatus.phase.
const (
	// PhasePending: accepted, not yet on an agent (see the message).
	PhasePending = "Pending"
	// PhaseProvisioning: the agent is cloning the disk or building the target.
	PhaseProvisioning = "Provisioning"
	// PhaseReady: the target is served and only the node may log in.
	PhaseReady = "Ready"
	// PhaseFailed: the agent could not converge; the message says why. It
	// keeps retrying.
	PhaseFailed = "Failed"
	// PhaseDeleting: deletion was requested; the agent is tearing down.
	PhaseDeleting = "Deleting"
	// PhaseDeleted: the agent has torn the node down; the controller then
	// removes the records. Seen only briefly.
	PhaseDeleted = "Deleted"
	// PhaseUnavailable: the node's agent lost its lease, or its target
	// system does not serve the node's target (tgtd died or does not
	// answer; the message says which). The disk lives on that host; the
	// node comes back with it.
	PhaseUnavailable = "Unavailable"
)

// Placement reasons, as the scheduler writes them in Placement.reason
// (and the node's Scheduled condition shows them).
const (
	// ReasonScheduled: placed on an agent.
	ReasonScheduled = "Scheduled"
	// ReasonNoAgent: no Ready agent holds the node's image.
	ReasonNoAgent = "NoAgentHoldsImage"
	// ReasonAgentNotFound: the pinned agent is not registered.
	ReasonAgentNotFound = "AgentNotFound"
	// ReasonAgentUnavailable: the pinned agent's lease expired.
	ReasonAgentUnavailable = "AgentUnavailable"
	// ReasonImageNotReady: the pinned agent does not hold the image yet.
	ReasonImageNotReady = "ImageNotReady"
	// ReasonPinIgnored: placed on the agent that holds the node's disk,
	// not on the pinned one (the message says why).
	ReasonPinIgnored = "PinIgnored"
)

// Agent states.
const (
	// AgentReady: its lease is alive and it serves its targets.
	AgentReady = "Ready"
	// AgentNotReady: its lease is alive but it does not serve its targets
	// (its target system is down, or it is rebuilding them); Agent.message
	// says why.
	AgentNotReady = "NotReady"
	// AgentUnavailable: registered, its lease is gone.
	AgentUnavailable = "Unavailable"
)

// Image replica phases.
const (
	ReplicaPending = "Pending"
	ReplicaReady   = "Ready"
	ReplicaFailed  = "Failed"
)

// Condition types on a node.
const (
	ConditionScheduled      = "Scheduled"
	ConditionAgentAvailable = "AgentAvailable"
	ConditionReady          = "Ready"
	// ConditionMACsBoot is present, false, when a MAC in the node's
	// spec.macs cannot boot it: another node lists it too (written before
	// sanboot refused duplicates), so the boot server serves it to neither.
	ConditionMACsBoot = "MACsBoot"
)

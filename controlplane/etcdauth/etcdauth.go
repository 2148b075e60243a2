// Package etcdauth turns on etcd's own authorization when the control
// plane runs with mutual TLS, so that an agent is confined by etcd itself,
// not by sanboot's good manners.
//
// etcd's client-certificate authentication takes the certificate's CN as
// the user name (package pki puts the name there). Users have no password:
// only a certificate of the cluster's CA authenticates them.
//
//	user <member>   role root       (a control-plane member; also "root")
//	user <agent>    role agent-<agent>:
//	   read        images/, members/, imagereplicas/ (the images it holds
//	               and their copies elsewhere), assign/<agent>/,
//	               exports/<agent>/
//	   read-write  agents/<agent>, alive/<agent>, imagereplicas/<agent>/,
//	               nodestatus/<agent>/
//
// So an agent cannot read another agent's assignments (they carry CHAP
// secrets), nor secrets/, boottokens/, nodes/ or placements/, nor write
// another agent's registration, replicas or node statuses (api/keys.go
// puts the agent's name first in every key it writes). Enable brings the
// role of every enrolled agent to exactly these grants, so a member that
// starts drops the broader grants an older release gave.
package etcdauth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sanboot/sanboot/api"
)

// RootRole is etcd's built-in role with every permission.
const RootRole = "root"

// AgentRole is the role of agent name.
func AgentRole(name string) string { return "agent-" + name }

// Enable makes sure that etcd's users root, member and peers (each with the
// root role) exist, then turns authorization on, or, when it is on, brings
// every agent's role to the current grants. peers are the other members the
// cluster started with (--initial-cluster): members that start at once each
// make every member's user before any turns authorization on, so none finds
// it on without its own user. It is idempotent: a member that starts again,
// with authorization already on, finds its user there (for a member that
// joins a running cluster, AddMember made it).
func Enable(ctx context.Context, cli *clientv3.Client, member string, peers ...string) error {
	for _, u := range append([]string{"root", member}, peers...) {
		if err := ensureUser(ctx, cli, u, RootRole); err != nil {
			return fmt.Errorf("etcd user %s: %w", u, err)
		}
	}
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("etcd auth status: %w", err)
	}
	if st.Enabled {
		return syncAgents(ctx, cli)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("turn on etcd authorization: %w", err)
	}
	return nil
}

// AddMember makes sure that member, about to join the cluster, has its etcd
// user with the root role when authorization is on (its certificate's CN
// is that user; without it the new member could not use its own etcd).
func AddMember(ctx context.Context, cli *clientv3.Client, member string) error {
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("etcd auth status: %w", err)
	}
	if !st.Enabled {
		return nil
	}
	if err := ensureUser(ctx, cli, member, RootRole); err != nil {
		return fmt.Errorf("etcd user %s: %w", member, err)
	}
	return nil
}

// EnrollAgent makes sure agent name has its etcd user and role, with
// exactly the permissions above (it revokes any other). It is idempotent.
func EnrollAgent(ctx context.Context, cli *clientv3.Client, name string) error {
	if err := api.ValidateName("agent name", name); err != nil {
		return err
	}
	role := AgentRole(name)
	if _, err := cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("etcd role %s: %w", role, err)
	}
	if err := syncGrants(ctx, cli, role, agentGrants(name)); err != nil {
		return err
	}
	return ensureUser(ctx, cli, name, role)
}

// grant is one permission of a role: a key, or the range [key, end).
type grant struct {
	key, end string
	perm     clientv3.PermissionType
}

// agentGrants are the permissions of agent name's role.
func agentGrants(name string) []grant {
	prefix := func(p string, perm clientv3.PermissionType) grant {
		return grant{p, clientv3.GetPrefixRangeEnd(p), perm}
	}
	exact := func(k string, perm clientv3.PermissionType) grant { return grant{k, "", perm} }
	read, rw := clientv3.PermissionType(clientv3.PermRead), clientv3.PermissionType(clientv3.PermReadWrite)
	return []grant{
		prefix(api.ImagesPrefix(""), read),
		prefix(api.MembersPrefix(), read),
		prefix(api.AssignPrefix(name), read),
		prefix(api.ExportsPrefix(name), read),
		prefix(api.ReplicasPrefix(), read),
		prefix(api.AgentReplicasPrefix(name), rw),
		prefix(api.AgentNodeStatusPrefix(name), rw),
		exact(api.AgentKey(name), rw),
		exact(api.AliveKey(name), rw),
	}
}

// syncGrants gives role exactly the permissions want: it grants each (etcd
// replaces a grant of the same range) and revokes the ranges not wanted.
func syncGrants(ctx context.Context, cli *clientv3.Client, role string, want []grant) error {
	wanted := map[[2]string]bool{}
	for _, g := range want {
		if _, err := cli.RoleGrantPermission(ctx, role, g.key, g.end, g.perm); err != nil {
			return fmt.Errorf("etcd role %s: grant %s: %w", role, g.key, err)
		}
		wanted[[2]string{g.key, g.end}] = true
	}
	resp, err := cli.RoleGet(ctx, role)
	if err != nil {
		return fmt.Errorf("etcd role %s: %w", role, err)
	}
	for _, p := range resp.Perm {
		if wanted[[2]string{string(p.Key), string(p.RangeEnd)}] {
			continue
		}
		if _, err := cli.RoleRevokePermission(ctx, role, string(p.Key), string(p.RangeEnd)); err != nil {
			return fmt.Errorf("etcd role %s: revoke %s: %w", role, p.Key, err)
		}
	}
	return nil
}

// syncAgents brings the role of every enrolled agent to agentGrants.
func syncAgents(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.RoleList(ctx)
	if err != nil {
		return fmt.Errorf("list etcd roles: %w", err)
	}
	for _, role := range resp.Roles {
		name, ok := strings.CutPrefix(role, AgentRole(""))
		if !ok || api.ValidateName("agent name", name) != nil {
			continue
		}
		if err := syncGrants(ctx, cli, role, agentGrants(name)); err != nil {
			return err
		}
	}
	return nil
}

func ensureUser(ctx context.Context, cli *clientv3.Client, name, role string) error {
	if _, err := cli.UserAddWithOptions(ctx, name, "", &clientv3.UserAddOptions{NoPassword: true}); err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		return err
	}
	if _, err := cli.UserGrantRole(ctx, name, role); err != nil {
		return err
	}
	return nil
}

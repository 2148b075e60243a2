// Package fakeagent is a FAKE sanboot agent for the control plane's tests
// and benchmarks. It writes, straight into etcd, the records a real agent
// writes (AgentRecord, leased alive key, image replicas, node statuses) and
// can answer its assignments by itself (Serve). It has no store and no
// iSCSI target: it only says it did the work.
package fakeagent

import (
	"context"

	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/internal/kv"
)

// Portal is what every fake agent says its targets listen on.
const Portal = "127.0.0.1:3260"

// Agent is a fake agent registered in etcd.
type Agent struct {
	Name string
	cli  *clientv3.Client

	mu    sync.Mutex
	lease clientv3.LeaseID
	stop  context.CancelFunc // stops the keep-alive
}

// Register writes the agent's record and its alive key under a lease of
// ttl seconds, kept alive until StopKeepAlive, Revoke or ctx ends.
func Register(ctx context.Context, cli *clientv3.Client, name string, ttl int64) (*Agent, error) {
	a := &Agent{Name: name, cli: cli}
	rec := &sanbootv1.AgentRecord{Name: name, Version: "fake", Driver: "fake", Portals: []string{Portal},
		CloneMode: "fake", StartTime: timestamppb.Now()}
	put, err := kv.PutOp(api.AgentKey(name), rec)
	if err != nil {
		return nil, err
	}
	if _, err := cli.Do(ctx, put); err != nil {
		return nil, fmt.Errorf("fake agent %s: write record: %w", name, err)
	}
	return a, a.Alive(ctx, ttl)
}

// Start registers the agent (Register) and serves its assignments
// (Serve, logging nothing) until ctx ends.
func Start(ctx context.Context, cli *clientv3.Client, name string, ttl int64) (*Agent, error) {
	a, err := Register(ctx, cli, name, ttl)
	if err != nil {
		return nil, err
	}
	go a.Serve(ctx, slog.New(slog.DiscardHandler))
	return a, nil
}

// Alive (re)writes the alive key under a new lease of ttl seconds, kept
// alive in the background.
func (a *Agent) Alive(ctx context.Context, ttl int64) error {
	l, err := a.cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("fake agent %s: grant lease: %w", a.Name, err)
	}
	if _, err := a.cli.Put(ctx, api.AliveKey(a.Name), "", clientv3.WithLease(l.ID)); err != nil {
		return fmt.Errorf("fake agent %s: write alive key: %w", a.Name, err)
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ch, err := a.cli.KeepAlive(kctx, l.ID)
	if err != nil {
		cancel()
		return fmt.Errorf("fake agent %s: keep alive: %w", a.Name, err)
	}
	go func() {
		for range ch {
		}
	}()
	context.AfterFunc(ctx, cancel)
	a.mu.Lock()
	a.lease, a.stop = l.ID, cancel
	a.mu.Unlock()
	return nil
}

// StopKeepAlive stops renewing the lease, as a crashed agent would: the
// alive key goes when the lease expires.
func (a *Agent) StopKeepAlive() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stop != nil {
		a.stop()
	}
}

// Revoke ends the lease at once, as an agent that shuts down cleanly does.
func (a *Agent) Revoke(ctx context.Context) error {
	a.StopKeepAlive()
	a.mu.Lock()
	id := a.lease
	a.mu.Unlock()
	_, err := a.cli.Revoke(ctx, id)
	return err
}

// SetReplica reports the agent's replica of an image in phase.
func (a *Agent) SetReplica(ctx context.Context, project, image, phase string) error {
	put, err := kv.PutOp(api.ReplicaKey(project, image, a.Name), &sanbootv1.ImageReplica{
		Agent: a.Name, Phase: phase, ObservedGeneration: 1, Sha256: "fake", UpdateTime: timestamppb.Now()})
	if err != nil {
		return err
	}
	_, err = a.cli.Do(ctx, put)
	return err
}

// Report writes the status of node in phase, about the assignment the
// agent currently has, comparing the assignment's mod_revision as a real
// agent does. It fails when the agent has no such assignment.
func (a *Agent) Report(ctx context.Context, project, node, phase, message string) error {
	var asg sanbootv1.Assignment
	rev, err := kv.Get(ctx, a.cli, api.AssignKey(a.Name, project, node), &asg)
	if err != nil {
		return fmt.Errorf("fake agent %s: %w", a.Name, err)
	}
	op, err := kv.PutOp(api.NodeStatusKey(project, node, a.Name), a.status(&asg, phase, message))
	if err != nil {
		return err
	}
	resp, err := a.cli.Txn(ctx).If(kv.Unchanged(api.AssignKey(a.Name, project, node), rev)).Then(op).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return kv.ErrConflict
	}
	return nil
}

func (a *Agent) status(asg *sanbootv1.Assignment, phase, message string) *sanbootv1.NodeStatus {
	return &sanbootv1.NodeStatus{
		Phase: phase, Message: message, Agent: a.Name,
		TargetIqn: asg.GetTargetIqn(), Portals: []string{Portal}, Lun: 0,
		ObservedGeneration: asg.GetGeneration(), CloneMode: "fake",
	}
}

// Serve answers the agent's assignments until ctx ends: Ready for each
// assignment, Deleted for each one marked deleting. Statuses of one watch
// response go out in few transactions, as a busy real agent might batch
// them.
func (a *Agent) Serve(ctx context.Context, log *slog.Logger) error {
	prefix := api.AssignPrefix(a.Name)
	return kv.Reflect(ctx, a.cli, prefix, log, func(b kv.Batch) {
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, ev := range b.Events {
			if ev.Deleted {
				continue
			}
			var asg sanbootv1.Assignment
			if proto.Unmarshal(ev.Value, &asg) != nil {
				continue
			}
			phase := api.PhaseReady
			if asg.GetDeleting() {
				phase = api.PhaseDeleted
			}
			op, err := kv.PutOp(api.NodeStatusKey(asg.GetProject(), asg.GetNode(), a.Name), a.status(&asg, phase, ""))
			if err != nil {
				continue
			}
			cmps = append(cmps, kv.Unchanged(ev.Key, ev.ModRevision))
			ops = append(ops, op)
		}
		for len(ops) > 0 {
			n := min(len(ops), 64)
			a.write(ctx, cmps[:n], ops[:n])
			cmps, ops = cmps[n:], ops[n:]
		}
	})
}

// write commits statuses together, or one by one when an assignment
// changed meanwhile (its newer version comes in a later batch).
func (a *Agent) write(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) {
	for ctx.Err() == nil {
		resp, err := a.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !resp.Succeeded && len(ops) > 1 {
			for i := range ops {
				a.write(ctx, cmps[i:i+1], ops[i:i+1])
			}
		}
		return
	}
}

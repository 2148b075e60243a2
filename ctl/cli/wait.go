package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/printers"
)

// condition is what a wait waits for.
type condition string

const (
	condReady   condition = "ready"
	condDeleted condition = "deleted"
)

func parseCondition(s string) (condition, error) {
	switch strings.ToLower(strings.TrimPrefix(s, "condition=")) {
	case "ready":
		return condReady, nil
	case "deleted", "delete":
		return condDeleted, nil
	}
	if rest, ok := strings.CutPrefix(s, "condition="); ok {
		typ, want, hasWant := strings.Cut(rest, "=")
		for _, t := range []string{api.ConditionScheduled, api.ConditionAgentAvailable, api.ConditionReady} {
			if !strings.EqualFold(typ, t) {
				continue
			}
			switch w := strings.ToLower(want); {
			case !hasWant || w == "true":
				return condition("condition=" + t), nil
			case w == "false":
				return condition("condition=" + t + "=false"), nil
			}
			return "", usageErrorf("--for=%q: a condition is True or False, e.g. --for=condition=%s=false", s, t)
		}
		return "", usageErrorf("--for=%q: node conditions are %s, %s and %s", s, api.ConditionScheduled, api.ConditionAgentAvailable, api.ConditionReady)
	}
	return "", usageErrorf("--for=%q: use --for=ready, --for=deleted or --for=condition=TYPE[=false]", s)
}

// conditionMet says whether n has the condition cond ("condition=TYPE" or
// "condition=TYPE=false") with the wanted status.
func conditionMet(n *sanbootv1.Node, cond condition) bool {
	typ, want, _ := strings.Cut(strings.TrimPrefix(string(cond), "condition="), "=")
	for _, c := range n.GetStatus().GetConditions() {
		if c.GetType() == typ {
			return c.GetStatus() == (want != "false")
		}
	}
	return false
}

func newWaitCmd(s *session) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wait node NAME... [--for=ready|deleted] [--timeout=D]",
		Short: "Wait until nodes are Ready or deleted",
		Long: `Wait until every named node is Ready or deleted.

Ready means the node's phase is Ready and its status describes its current
spec (status.observedGeneration == metadata.generation). Waiting follows the
API's watch of the nodes; it never polls. A node that is Failed for its
current spec ends the wait with exit code 1 and the agent's message; a node
that does not exist ends a wait for ready with exit code 4. When --timeout
passes first, the exit code is 3.

--for=condition=TYPE[=false] waits until the node's condition TYPE
(Scheduled, AgentAvailable or Ready, as describe shows them) has that
status.`,
		Example: `  # Wait up to ten minutes for two nodes to be served
  sanbootctl wait node node-01 node-02 --for=ready --timeout=10m

  # Wait until a node's disk and target are gone
  sanbootctl wait node node-01 --for=deleted

  # Wait until the scheduler has placed a node on an agent
  sanbootctl wait node node-01 --for=condition=Scheduled`,
		RunE: noSubcommand("wait for", "wait node NAME..."),
	}

	o := &waitNodeOptions{}
	node := &cobra.Command{
		Use:     "node NAME...",
		Aliases: []string{"nodes", "no"},
		Short:   "Wait until nodes are Ready or deleted",
		Example: `  sanbootctl wait node node-01 --for=ready --timeout=10m
  sanbootctl wait node node-01 node-02 --for=deleted
  sanbootctl wait node -l rack=r1 --for=condition=Scheduled`,
		ValidArgsFunction: s.completeNodes,
		RunE:              runOptions(s, o),
	}
	node.Flags().StringVar(&o.forFlag, "for", string(condReady), "condition: ready, deleted, or condition=TYPE[=false] (Scheduled, AgentAvailable, Ready)")
	node.Flags().DurationVar(&o.timeout, "timeout", defaultWaitTimeout, "how long to wait (exit code 3 when it passes)")
	node.Flags().StringVarP(&o.selector, "selector", "l", "", "wait for the nodes with these labels (as they are when the wait starts) instead of naming them")
	_ = node.RegisterFlagCompletionFunc("for", cobra.FixedCompletions([]string{"ready", "deleted", "condition=Scheduled", "condition=AgentAvailable", "condition=Ready"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(node)
	return cmd
}

// waitNodeOptions are wait node's (options.go).
type waitNodeOptions struct {
	nodeArgs
	forFlag string // --for, parsed into cond by validate
	cond    condition
	timeout time.Duration
}

func (o *waitNodeOptions) validate() error {
	cond, err := parseCondition(o.forFlag)
	o.cond = cond
	return err
}

// run waits for the named nodes, or for those the selector picks now.
func (o *waitNodeOptions) run(ctx context.Context, s *session) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	project, names, err := o.resolve(ctx, s)
	if err != nil {
		return err
	}
	return s.waitNodes(ctx, project, names, o.cond, o.timeout)
}

// nodeWait is the state of one waitNodes call.
type nodeWait struct {
	project  string
	cond     condition
	pending  map[string]bool
	last     map[string]string // last progress line per node, for the timeout message
	progress io.Writer         // phase changes go here (stderr)
	done     io.Writer         // "node/x ready" goes here (stdout)
}

// streamError is a failure of the watch stream itself (as opposed to a
// node reaching a state that ends the wait); some are worth a reconnect.
type streamError struct{ err error }

func (e *streamError) Error() string { return e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

// waitNodes blocks until every named node of project meets cond or ctx
// ends. It is driven by WatchNodes: the watch first sends every matching
// node (TYPE_INITIAL), then TYPE_SYNCED, then changes. When the stream
// breaks (a control-plane member went away) it opens a new one, which
// starts with the current state again; nothing is polled.
func (s *session) waitNodes(ctx context.Context, project string, names []string, cond condition, timeout time.Duration) error {
	c, err := s.api()
	if err != nil {
		return err
	}
	w := &nodeWait{
		project: project, cond: cond,
		pending:  make(map[string]bool, len(names)),
		last:     make(map[string]string, len(names)),
		progress: s.env.Stderr, done: s.env.Stdout,
	}
	for _, n := range names {
		w.pending[n] = true
	}
	backoff := 250 * time.Millisecond
	var breaks reconnects
	for {
		synced, err := w.watchOnce(ctx, c, names)
		if err == nil {
			return nil
		}
		var se *streamError
		isStream := errors.As(err, &se)
		// The server may see the deadline (sent along as grpc-timeout)
		// before this process's timer fires: DeadlineExceeded is a timeout
		// either way.
		if errors.Is(ctx.Err(), context.DeadlineExceeded) || (isStream && status.Code(se.err) == codes.DeadlineExceeded) {
			return w.timeoutError(timeout)
		}
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		if !isStream {
			return err
		}
		if !retryable(se.err) {
			return s.rpcError(se.err)
		}
		if synced {
			backoff = 250 * time.Millisecond
		}
		breaks.note(w.progress, synced, se.err, backoff)
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return w.timeoutError(timeout)
			}
			return errors.New("interrupted")
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// reconnects tells the user about a broken watch stream that is opened
// again, except the first break after a stream that worked: a member that
// died or was stopped breaks its streams once, and the reconnect (to
// another member) repairs that, which is none of the user's business (a
// member's death costs a client a retried call, never an error printed).
// A stream that breaks again before it works is reported each time.
type reconnects struct{ inARow int }

// note records a break of a stream that got as far as its initial state
// (synced) or not.
func (r *reconnects) note(w io.Writer, synced bool, err error, backoff time.Duration) {
	if synced {
		r.inARow = 0
	}
	r.inARow++
	if r.inARow > 1 {
		fmt.Fprintf(w, "watch interrupted (%s); reconnecting in %s\n", status.Convert(err).Message(), backoff)
	}
}

// retryable reports whether a broken watch is worth opening again: the
// server went away or is stopping (Unavailable), ended the stream (io.EOF),
// or dropped a watcher that fell behind (ResourceExhausted, "watch again").
func retryable(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted:
		return true
	}
	return false
}

// watchOnce runs one watch stream until every node met the condition (nil),
// a node ended the wait (an error), or the stream failed (*streamError).
// synced reports whether the stream got as far as TYPE_SYNCED.
func (w *nodeWait) watchOnce(ctx context.Context, c sanbootv1.SanbootClient, names []string) (synced bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.WatchNodes(ctx, &sanbootv1.WatchNodesRequest{Project: w.project, Names: names})
	if err != nil {
		return false, &streamError{err}
	}
	seen := map[string]bool{}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return synced, &streamError{err}
		}
		n := ev.GetNode()
		name := n.GetMetadata().GetName()
		mine := w.pending[name] && api.ProjectOrDefault(n.GetMetadata().GetProject()) == w.project
		switch ev.GetType() {
		case sanbootv1.NodeEvent_TYPE_SYNCED:
			synced = true
			for _, name := range sortedKeys(w.pending) {
				if seen[name] {
					continue
				}
				if w.cond == condDeleted {
					w.finish(name)
					continue
				}
				return synced, withCode(ExitNotFound, fmt.Errorf("node %q not found in project %q", name, w.project))
			}
		case sanbootv1.NodeEvent_TYPE_INITIAL, sanbootv1.NodeEvent_TYPE_ADDED, sanbootv1.NodeEvent_TYPE_MODIFIED:
			if !mine {
				continue
			}
			seen[name] = true
			w.report(n)
			if w.cond == condDeleted {
				continue
			}
			if w.cond != condReady {
				if conditionMet(n, w.cond) {
					w.finish(name)
				}
				break
			}
			ready, err := isReady(n)
			if err != nil {
				return synced, err
			}
			if ready {
				w.finish(name)
			}
		case sanbootv1.NodeEvent_TYPE_DELETED:
			if !mine {
				continue
			}
			if w.cond != condDeleted {
				return synced, fmt.Errorf("node/%s was deleted while waiting for %s", name, w.cond)
			}
			w.finish(name)
		}
		if len(w.pending) == 0 {
			return synced, nil
		}
	}
}

// isReady says whether n is Ready for its current spec, or returns an error
// when it cannot become Ready by waiting (Failed for the current spec, or
// being deleted).
func isReady(n *sanbootv1.Node) (bool, error) {
	m, st := n.GetMetadata(), n.GetStatus()
	if m.GetDeleteTime() != nil {
		return false, fmt.Errorf("node/%s is being deleted", m.GetName())
	}
	if st.GetObservedGeneration() < m.GetGeneration() {
		return false, nil // the status describes an older spec
	}
	switch st.GetPhase() {
	case api.PhaseReady:
		return true, nil
	case api.PhaseFailed:
		return false, fmt.Errorf("node/%s failed: %s (the agent keeps retrying)", m.GetName(), printers.OrNone(st.GetMessage()))
	}
	return false, nil
}

// report prints a node's phase and message when they changed.
func (w *nodeWait) report(n *sanbootv1.Node) {
	name, st := n.GetMetadata().GetName(), n.GetStatus()
	line := printers.OrNone(st.GetPhase())
	if msg := st.GetMessage(); msg != "" {
		line += ": " + msg
	}
	if w.last[name] == line {
		return
	}
	w.last[name] = line
	fmt.Fprintf(w.progress, "node/%s: %s\n", name, line)
}

func (w *nodeWait) finish(name string) {
	delete(w.pending, name)
	fmt.Fprintf(w.done, "node/%s %s\n", name, w.cond)
}

func (w *nodeWait) timeoutError(timeout time.Duration) error {
	var parts []string
	for _, name := range sortedKeys(w.pending) {
		if last, ok := w.last[name]; ok {
			parts = append(parts, fmt.Sprintf("node/%s (last seen %s)", name, last))
		} else {
			parts = append(parts, "node/"+name)
		}
	}
	return withCode(ExitTimeout, fmt.Errorf("timed out after %s waiting for %s to be %s; raise --timeout to wait longer",
		timeout, strings.Join(parts, ", "), w.cond))
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

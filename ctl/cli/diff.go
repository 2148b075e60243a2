package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/manifest"
	"github.com/sanboot/sanboot/ctl/printers"
)

// Exit codes of diff (as kubectl diff): 0 no differences, 1 differences,
// above 1 an error.
const exitDiffFound = 1

func newDiffCmd(s *session) *cobra.Command {
	o := &diffOptions{}
	cmd := &cobra.Command{
		Use:   "diff -f (FILE|DIR|-)...",
		Short: "Show what apply would change",
		Long: `Show, for every object of the files, how apply would change what the API
holds: the live object (metadata name, project, labels and spec) against
the object as the API would store it (asked with a server dry run, so
values the API fills in, such as a snapshot's size and agents, are shown as
they would be). A new object is all additions.

Exit status: 0 no differences, 1 differences, above 1 an error (a general
error exits 2 here instead of 1; not found 4, conflict 5 as elsewhere).`,
		Example: `  # What would apply change?
  sanbootctl diff -f examples/nodes.yaml

  # In a script: apply only when something changed
  if ! sanbootctl diff -f nodes.yaml >/dev/null; then sanbootctl apply -f nodes.yaml; fi`,
		Args: noArgs("diff takes files with -f, not arguments"),
		RunE: runOptions(s, o),
	}
	cmd.Flags().StringArrayVarP(&o.files, "filename", "f", nil, "file, directory or - (standard input) to compare (repeatable)")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

// diffOptions are diff's (options.go).
type diffOptions struct{ files []string } // -f

func (o *diffOptions) complete([]string) error { return nil }

func (o *diffOptions) validate() error { return nil }

// run prints the differences; the exit code says whether there were any.
func (o *diffOptions) run(ctx context.Context, s *session) error {
	changed, err := s.diff(ctx, o.files)
	if err != nil {
		code := exitCode(err)
		if code == ExitError {
			code = ExitUsage // kubectl diff: an error is above 1
		}
		return &fixedExit{code: code, err: err}
	}
	if changed {
		return silentExit(exitDiffFound)
	}
	return nil
}

// diff bounds each API call by --timeout (the client does), not the
// whole command: a diff of thousands of objects may rightly take longer.
func (s *session) diff(ctx context.Context, files []string) (bool, error) {
	objs, project, err := s.load(files, true)
	if err != nil {
		return false, err
	}
	c, err := s.api()
	if err != nil {
		return false, err
	}
	changed := false
	var errs []error
	var fatal error
	created := map[string]bool{}
	report := func(o *manifest.Object, r liveWanted) bool {
		name := objName(kindName(o), o.Meta().GetName(), o.Meta().GetProject(), project)
		live, want, err := r.live, r.want, r.err
		if o.Image != nil && err == nil && live == nil {
			created[o.Meta().GetProject()+"/"+o.Meta().GetName()] = true
		}
		if imageComesFirst(o, err, created) {
			live, want, err = nil, o.Node, nil // new, with the image of this diff
		}
		if isUnreachable(err) {
			fatal = err
			return false
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", o.Pos, name, err))
			return true
		}
		if r.same {
			return true
		}
		a, err := diffDoc(o.Kind, live)
		if err == nil {
			var b []byte
			if b, err = diffDoc(o.Kind, want); err == nil && !bytes.Equal(a, b) {
				changed = true
				from := "live " + name
				if live == nil {
					from = "/dev/null (" + name + " does not exist)"
				}
				writeDiff(s.env.Stdout, from, "applied "+name, splitLines(a), splitLines(b))
			}
		}
		if err != nil {
			fatal = err
			return false
		}
		return true
	}
	// As apply: images one by one, then many nodes at once.
	var live liveNodes // read before the first node
	sorted := manifest.Sort(objs)
	for i := 0; i < len(sorted); {
		if sorted[i].Node == nil {
			if !report(sorted[i], s.liveAndWanted(ctx, c, sorted[i])) {
				return false, fatal
			}
			i++
			continue
		}
		j := i
		for j < len(sorted) && sorted[j].Node != nil {
			j++
		}
		if live == nil {
			if live, err = s.readLive(ctx, c, objs); err != nil {
				return false, err
			}
		}
		calls := live.calls(sorted[i:j])
		inOrder(ctx, len(calls), callsInFlight,
			func(ctx context.Context, k int) []liveWanted { return s.diffNodes(ctx, c, calls[k], live) },
			func(k int, rs []liveWanted) bool {
				for m, r := range rs {
					if !report(calls[k][m], r) {
						return false
					}
				}
				return true
			})
		if fatal != nil {
			return false, fatal
		}
		i = j
	}
	return changed, errors.Join(errs...)
}

// liveWanted is an object as the API holds it (nil when it does not
// exist) and as apply would leave it.
type liveWanted struct {
	live, want proto.Message
	err        error
	// same: decided unchanged from a list, without a call: nothing to show.
	same bool
}

// diffNodes is liveAndWanted of each of nodes. A node of a listed project
// is as listed; an unchanged one needs no call, what apply would make of
// the others one PutNodes dry run tells. The nodes of other projects are
// asked for one by one.
func (s *session) diffNodes(ctx context.Context, c sanbootv1.SanbootClient, nodes []*manifest.Object, live liveNodes) []liveWanted {
	out := make([]liveWanted, len(nodes))
	req := &sanbootv1.PutNodesRequest{Mode: sanbootv1.PutMode_PUT_MODE_APPLY, DryRun: true, ReadRevision: live.readRevision(nodes)}
	var sent, alone []int // req.Nodes[m] is nodes[sent[m]]
	for k, o := range nodes {
		lp, _ := live.of(o)
		switch {
		case lp == nil:
			alone = append(alone, k)
		case live.unchanged(o):
			out[k] = liveWanted{same: true}
		default:
			req.Nodes, sent = append(req.Nodes, live.toSend(o)), append(sent, k)
		}
	}
	if len(sent) > 0 {
		fail := func(err error) {
			for _, k := range sent {
				out[k] = liveWanted{err: err}
			}
		}
		resp, err := c.PutNodes(ctx, req)
		switch {
		case status.Code(err) == codes.Unimplemented:
			alone = append(alone, sent...)
		case err != nil:
			fail(s.rpcError(err))
		case len(resp.GetResults()) != len(sent):
			fail(fmt.Errorf("the API answered %d results for %d nodes", len(resp.GetResults()), len(sent)))
		default:
			for m, r := range resp.GetResults() {
				k := sent[m]
				if code := codes.Code(r.GetCode()); code != codes.OK {
					out[k] = liveWanted{err: s.rpcError(status.Error(code, r.GetMessage()))}
					continue
				}
				out[k] = liveWanted{want: r.GetNode()}
				if _, n := live.of(nodes[k]); n != nil {
					out[k].live = n
				}
			}
		}
	}
	inOrder(ctx, len(alone), inFlight/callsInFlight,
		func(ctx context.Context, m int) liveWanted { return s.liveAndWanted(ctx, c, nodes[alone[m]]) },
		func(m int, r liveWanted) bool { out[alone[m]] = r; return true })
	return out
}

// liveAndWanted asks the API for an object as it is and as apply would
// leave it.
func (s *session) liveAndWanted(ctx context.Context, c sanbootv1.SanbootClient, o *manifest.Object) liveWanted {
	m := o.Meta()
	get := &sanbootv1.GetRequest{Project: m.GetProject(), Name: m.GetName()}
	if o.Node != nil {
		// Both calls at once: neither needs the other.
		var cur *sanbootv1.Node
		var getErr error
		got := make(chan struct{})
		go func() {
			defer close(got)
			cur, getErr = c.GetNode(ctx, get)
		}()
		resp, err := c.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: o.Node, Mode: sanbootv1.PutMode_PUT_MODE_APPLY, DryRun: true})
		<-got
		if getErr != nil && status.Code(getErr) != codes.NotFound {
			return liveWanted{err: s.rpcError(getErr)}
		}
		if err != nil {
			return liveWanted{err: s.rpcError(err)}
		}
		r := liveWanted{want: resp.GetNode()}
		if cur != nil {
			r.live = cur
		}
		return r
	}
	cur, err := c.GetImage(ctx, get)
	if err != nil && status.Code(err) != codes.NotFound {
		return liveWanted{err: s.rpcError(err)}
	}
	im := o.Image
	if o.File != "" {
		if im, _, err = s.resolveFile(ctx, c, o, true); err != nil {
			return liveWanted{err: err}
		}
	}
	resp, err := c.PutImage(ctx, &sanbootv1.PutImageRequest{Image: im, Mode: sanbootv1.PutMode_PUT_MODE_APPLY, DryRun: true})
	if err != nil {
		return liveWanted{err: s.rpcError(err)}
	}
	r := liveWanted{want: resp.GetImage()}
	if cur != nil {
		r.live = cur
	}
	return r
}

// diffDoc renders what apply manages of an object (apiVersion, kind,
// metadata name/project/labels, spec) as YAML; nil renders as nothing.
func diffDoc(kind string, m proto.Message) ([]byte, error) {
	if m == nil {
		return nil, nil
	}
	var meta *sanbootv1.ObjectMeta
	var spec proto.Message
	switch v := m.(type) {
	case *sanbootv1.Node:
		meta, spec = v.GetMetadata(), v.GetSpec()
	case *sanbootv1.Image:
		meta, spec = v.GetMetadata(), v.GetSpec()
	}
	mb, err := protojson.Marshal(&sanbootv1.ObjectMeta{Name: meta.GetName(), Project: meta.GetProject(), Labels: meta.GetLabels()})
	if err != nil {
		return nil, err
	}
	sb, err := protojson.Marshal(spec)
	if err != nil {
		return nil, err
	}
	doc := fmt.Sprintf(`{"apiVersion":%q,"kind":%q,"metadata":%s,"spec":%s}`, manifest.APIVersion, kind, mb, sb)
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(doc)); err != nil {
		return nil, err
	}
	return printers.JSONToYAML(compact.Bytes())
}

func splitLines(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// writeDiff prints a and b as one unified hunk with the whole object as
// context (objects are short).
func writeDiff(w io.Writer, from, to string, a, b []string) {
	fmt.Fprintf(w, "--- %s\n+++ %s\n@@ -%d,%d +%d,%d @@\n", from, to, min(1, len(a)), len(a), min(1, len(b)), len(b))
	// Longest common subsequence by dynamic programming.
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			fmt.Fprintf(w, " %s\n", a[i])
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(w, "+%s\n", b[j])
			j++
		default:
			fmt.Fprintf(w, "-%s\n", a[i])
			i++
		}
	}
}

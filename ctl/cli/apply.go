package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/ctl/manifest"
	"github.com/sanboot/sanboot/ctl/printers"
	"github.com/sanboot/sanboot/internal/bytesize"
)

// Values of --dry-run.
const (
	dryRunNone   = "none"
	dryRunServer = "server"
)

type applyFlags struct {
	files    []string
	dryRun   string
	wait     bool
	timeout  time.Duration
	prune    bool
	selector string
}

func newApplyCmd(s *session) *cobra.Command {
	o := &applyOptions{}
	f := &o.applyFlags
	cmd := &cobra.Command{
		Use:   "apply -f (FILE|DIR|-)... [--dry-run=server] [--wait] [--prune -l SELECTOR]",
		Short: "Create or update nodes and images from YAML or JSON files",
		Long: `Create or update the nodes and images that FILE (a file, every *.yaml, *.yml
and *.json file of a directory, or - for standard input) describes, and say
for each whether it was created, configured or unchanged.

A file holds one or more documents (YAML separated by ---, or a JSON object
or array):

  apiVersion: sanboot.io/v1
  kind: Node              # or Image
  metadata:
    name: node-01
    project: lab          # default: --project, $SANBOOT_PROJECT, the config file
    labels: {rack: r1}
  spec:
    image: debian-13
    macs: ["52:54:00:12:34:56"]

Every document is checked before anything is written (unknown fields, wrong
types and values the API refuses are reported as FILE:LINE:COLUMN with the
field path); if one is wrong, nothing is applied. Images are written before
nodes. An Image with spec.source.file: PATH (relative to the file) uploads
that raw or qcow2 file when the image does not exist yet.

With -l only the objects of the files that match the selector are applied;
--prune then also deletes the nodes of those projects that match the
selector but are not in the files. Nothing is pruned without --prune.`,
		Example: `  # Create or update the images, then the nodes, and wait until the nodes are Ready
  sanbootctl apply -f examples/images.yaml
  sanbootctl apply -f examples/nodes.yaml --wait --timeout 10m

  # Check a directory of manifests through the API without writing anything
  sanbootctl apply -f manifests/ --dry-run=server

  # Make the nodes labelled rack=r1 exactly those in the file
  sanbootctl apply -f rack-r1.yaml --prune -l rack=r1

  # Apply what get printed
  sanbootctl get node node-01 -o yaml | sanbootctl apply -f -`,
		Args: noArgs("apply takes files with -f, not arguments"),
		RunE: runOptions(s, o),
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.files, "filename", "f", nil, "file, directory or - (standard input) to apply (repeatable)")
	fl.StringVar(&f.dryRun, "dry-run", dryRunNone, "server: validate and compute the result through the API, write nothing")
	fl.Lookup("dry-run").NoOptDefVal = dryRunServer
	fl.BoolVar(&f.wait, "wait", false, "wait until every applied image and node is Ready")
	fl.DurationVar(&f.timeout, "timeout", defaultWaitTimeout, "bound of the whole command, including --wait (exit code 3 when it passes)")
	fl.BoolVar(&f.prune, "prune", false, "delete nodes that match -l but are not in the files")
	fl.StringVarP(&f.selector, "selector", "l", "", "apply only objects with these labels; with --prune, the nodes to prune")
	_ = cmd.MarkFlagRequired("filename")
	_ = cmd.RegisterFlagCompletionFunc("dry-run", cobra.FixedCompletions([]string{dryRunNone, dryRunServer}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// applyOptions are apply's (options.go).
type applyOptions struct{ applyFlags }

func (o *applyOptions) complete([]string) error { return nil }

func (o *applyOptions) validate() error { return o.check() }

func (o *applyOptions) run(ctx context.Context, s *session) error {
	return s.apply(ctx, o.applyFlags)
}

func (f *applyFlags) check() error {
	if err := checkDryRun(f.dryRun); err != nil {
		return err
	}
	if _, err := api.ParseSelector(f.selector); err != nil {
		return withCode(ExitUsage, err)
	}
	if f.prune && f.selector == "" {
		return usageErrorf("--prune needs -l SELECTOR: it deletes the nodes that match the selector and are not in the files")
	}
	if f.wait && f.dryRun == dryRunServer {
		return usageErrorf("--wait cannot be combined with --dry-run: nothing is written, so nothing becomes Ready")
	}
	return nil
}

func checkDryRun(v string) error {
	switch v {
	case dryRunNone, dryRunServer:
		return nil
	case "client":
		return usageErrorf("--dry-run=client is not supported: use --dry-run=server (the API validates and writes nothing)")
	}
	return usageErrorf("--dry-run=%q: use --dry-run=server or leave it out", v)
}

func noArgs(msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("%s (got %q)", msg, args[0])
		}
		return nil
	}
}

// load reads and checks the files of -f for the current project.
func (s *session) load(files []string, validate bool) ([]*manifest.Object, string, error) {
	project, err := s.project()
	if err != nil {
		return nil, "", err
	}
	objs, err := manifest.Load(manifest.Input{Paths: files, Stdin: s.env.Stdin, Project: project, Validate: validate})
	if err != nil {
		return nil, "", err
	}
	return objs, project, nil
}

// objName is "node/NAME", with the project when it is not the current one.
func objName(kind, name, project, current string) string {
	if project == current {
		return kind + "/" + name
	}
	return kind + "/" + name + " (project " + project + ")"
}

func kindName(o *manifest.Object) string { return strings.ToLower(o.Kind) }

// applied is what apply did to one object.
type applied struct {
	obj    *manifest.Object
	result sanbootv1.PutResult
}

func (s *session) apply(ctx context.Context, f applyFlags) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	objs, project, err := s.load(f.files, true)
	if err != nil {
		return err
	}
	sel, _ := api.ParseSelector(f.selector)
	objs = slices.DeleteFunc(objs, func(o *manifest.Object) bool { return !sel.Matches(o.Meta().GetLabels()) })
	c, err := s.api()
	if err != nil {
		return err
	}
	dry := f.dryRun == dryRunServer
	suffix := ""
	if dry {
		suffix = " (server dry run)"
	}
	var errs []error
	var done []applied
	created := map[string]bool{} // project/name of images this dry run would create
	sorted := manifest.Sort(objs)
	var unreachable error
	var live liveNodes // read before the first node
	report := func(o *manifest.Object, r applyResult) bool {
		if dry && o.Image != nil && r.err == nil && r.res == sanbootv1.PutResult_PUT_RESULT_CREATED {
			created[o.Meta().GetProject()+"/"+o.Meta().GetName()] = true
		}
		if dry && imageComesFirst(o, r.err, created) {
			r = applyResult{res: sanbootv1.PutResult_PUT_RESULT_CREATED, note: " (its image is created first)"}
		}
		if isUnreachable(r.err) {
			unreachable = r.err
			return false
		}
		name := objName(kindName(o), o.Meta().GetName(), o.Meta().GetProject(), project)
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", o.Pos, name, r.err))
			return true
		}
		fmt.Fprintf(s.env.Stdout, "%s %s%s%s\n", name, putResult(r.res), r.note, suffix)
		done = append(done, applied{obj: o, result: r.res})
		return true
	}
	// Images one by one (an upload may be among them), nodes (which
	// need their images, and snapshots of which need them) many at once.
	for i := 0; i < len(sorted); {
		if sorted[i].Node == nil {
			if !report(sorted[i], s.applyOne(ctx, c, sorted[i], dry)) {
				return unreachable
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
				return err
			}
		}
		chunks := live.calls(sorted[i:j])
		inOrder(ctx, len(chunks), callsInFlight,
			func(ctx context.Context, k int) []applyResult { return s.applyNodes(ctx, c, chunks[k], dry, live) },
			func(k int, rs []applyResult) bool {
				for m, r := range rs {
					if !report(chunks[k][m], r) {
						return false
					}
				}
				return true
			})
		if unreachable != nil {
			return unreachable
		}
		i = j
	}
	if f.prune {
		errs = append(errs, s.prune(ctx, c, objs, project, f.selector, dry))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if f.wait {
		return s.waitApplied(ctx, done, f.timeout)
	}
	return nil
}

// imageComesFirst says whether err is the API refusing, in a dry run, a new
// node whose image does not exist yet but would be created by the same
// apply (the API cannot know that; the real apply writes the image first).
func imageComesFirst(o *manifest.Object, err error, created map[string]bool) bool {
	return o.Node != nil && err != nil && exitCode(err) == ExitConflict &&
		created[o.Meta().GetProject()+"/"+o.Node.GetSpec().GetImage()] &&
		strings.Contains(err.Error(), "does not exist")
}

// nodesPerCall is how many nodes apply sends per PutNodes call (the API
// creates the new ones in one transaction), callsInFlight how many such
// calls it keeps in flight.
const (
	nodesPerCall  = 100
	callsInFlight = 8
)

// applyNodes decides the nodes of listed projects that are unchanged
// without the API, and writes the others with one PutNodes call (or, dry,
// asks what it would do), or with a PutNode call each when the API
// predates PutNodes.
func (s *session) applyNodes(ctx context.Context, c sanbootv1.SanbootClient, nodes []*manifest.Object, dry bool, live liveNodes) []applyResult {
	out := make([]applyResult, len(nodes))
	req := &sanbootv1.PutNodesRequest{Mode: sanbootv1.PutMode_PUT_MODE_APPLY, DryRun: dry, ReadRevision: live.readRevision(nodes)}
	var sent []int // req.Nodes[m] is nodes[sent[m]]
	for k, o := range nodes {
		if live.unchanged(o) {
			out[k] = applyResult{res: sanbootv1.PutResult_PUT_RESULT_UNCHANGED}
			continue
		}
		req.Nodes, sent = append(req.Nodes, live.toSend(o)), append(sent, k)
	}
	if len(sent) == 0 {
		return out
	}
	fail := func(err error) []applyResult {
		for _, k := range sent {
			out[k] = applyResult{err: err}
		}
		return out
	}
	resp, err := c.PutNodes(ctx, req)
	switch {
	case status.Code(err) == codes.Unimplemented:
		inOrder(ctx, len(sent), inFlight/callsInFlight,
			func(ctx context.Context, m int) applyResult { return s.applyOne(ctx, c, nodes[sent[m]], dry) },
			func(m int, r applyResult) bool { out[sent[m]] = r; return true })
		return out
	case err != nil:
		return fail(s.rpcError(err))
	case len(resp.GetResults()) != len(sent):
		return fail(fmt.Errorf("the API answered %d results for %d nodes", len(resp.GetResults()), len(sent)))
	}
	for m, r := range resp.GetResults() {
		k := sent[m]
		if code := codes.Code(r.GetCode()); code != codes.OK {
			out[k] = applyResult{err: s.rpcError(status.Error(code, r.GetMessage()))}
			continue
		}
		out[k] = applyResult{res: r.GetResult()}
	}
	return out
}

// applyResult is the outcome of one object's write.
type applyResult struct {
	res  sanbootv1.PutResult
	note string
	err  error
}

// applyOne writes one object (or, dry, asks the API what it would do).
func (s *session) applyOne(ctx context.Context, c sanbootv1.SanbootClient, o *manifest.Object, dry bool) applyResult {
	if o.Node != nil {
		resp, err := c.PutNode(ctx, &sanbootv1.PutNodeRequest{Node: o.Node, Mode: sanbootv1.PutMode_PUT_MODE_APPLY, DryRun: dry})
		if err != nil {
			return applyResult{err: s.rpcError(err)}
		}
		return applyResult{res: resp.GetResult()}
	}
	im := o.Image
	note := ""
	if o.File != "" {
		var err error
		if im, note, err = s.resolveFile(ctx, c, o, dry); err != nil {
			return applyResult{err: err}
		}
	}
	resp, err := c.PutImage(ctx, &sanbootv1.PutImageRequest{Image: im, Mode: sanbootv1.PutMode_PUT_MODE_APPLY, DryRun: dry})
	if err != nil {
		return applyResult{err: s.rpcError(err)}
	}
	if resp.GetResult() != sanbootv1.PutResult_PUT_RESULT_CREATED {
		note = ""
	}
	return applyResult{res: resp.GetResult(), note: note}
}

// resolveFile turns an Image with spec.source.file into one with an upload
// source: the existing image's source when the image exists (images are
// not uploaded again), else a new upload of the file (not when dry).
func (s *session) resolveFile(ctx context.Context, c sanbootv1.SanbootClient, o *manifest.Object, dry bool) (*sanbootv1.Image, string, error) {
	im := proto.CloneOf(o.Image)
	m := im.GetMetadata()
	cur, err := c.GetImage(ctx, &sanbootv1.GetRequest{Project: m.GetProject(), Name: m.GetName()})
	switch status.Code(err) {
	case codes.OK:
		im.Spec.Source = cur.GetSpec().GetSource()
		if o.SizeFromFile {
			im.Spec.SizeBytes = cur.GetSpec().GetSizeBytes()
		}
		return im, "", nil
	case codes.NotFound:
	default:
		return nil, "", s.rpcError(err)
	}
	if dry {
		return im, " (" + o.File + " not uploaded)", nil
	}
	want := im.Spec.SizeBytes
	if o.SizeFromFile {
		want = 0
	}
	up, err := s.upload(ctx, c, m.GetProject(), o.File, 0, "")
	if err != nil {
		return nil, "", fmt.Errorf("upload %s: %w", o.File, err)
	}
	if want != 0 && want != up.GetSizeBytes() {
		return nil, "", fmt.Errorf("spec.sizeBytes is %d but %s holds a %d-byte disk image: leave spec.sizeBytes out for a file source", want, o.File, up.GetSizeBytes())
	}
	im.Spec.SizeBytes = up.GetSizeBytes()
	im.Spec.Source = &sanbootv1.ImageSource{Kind: &sanbootv1.ImageSource_Upload{Upload: &sanbootv1.UploadSource{
		UploadId: up.GetUploadId(), Sha256: up.GetSha256(), Member: up.GetMember()}}}
	return im, fmt.Sprintf(" (uploaded %s, %s, sha256 %s)", o.File, bytesize.Format(up.GetSizeBytes()), printers.ShortSum(up.GetSha256())), nil
}

// prune deletes the nodes of the applied projects (and the current one)
// that match selector but are not among objs.
func (s *session) prune(ctx context.Context, c sanbootv1.SanbootClient, objs []*manifest.Object, project, selector string, dry bool) error {
	keep := map[string]bool{}
	projects := []string{project}
	for _, o := range objs {
		if o.Node != nil {
			keep[o.Meta().GetProject()+"/"+o.Meta().GetName()] = true
		}
		if !slices.Contains(projects, o.Meta().GetProject()) {
			projects = append(projects, o.Meta().GetProject())
		}
	}
	var errs []error
	for _, p := range projects {
		resp, err := listNodes(ctx, c, &sanbootv1.ListRequest{Project: p, LabelSelector: selector})
		if err != nil {
			errs = append(errs, s.rpcError(err))
			continue
		}
		nodes := resp.GetNodes()
		slices.SortFunc(nodes, func(a, b *sanbootv1.Node) int {
			return strings.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
		})
		for _, n := range nodes {
			m := n.GetMetadata()
			if keep[p+"/"+m.GetName()] || m.GetDeleteTime() != nil {
				continue
			}
			name := objName("node", m.GetName(), p, project)
			if dry {
				fmt.Fprintf(s.env.Stdout, "%s pruned (server dry run)\n", name)
				continue
			}
			if _, err := c.DeleteNode(ctx, &sanbootv1.DeleteRequest{Project: p, Name: m.GetName(), Revision: m.GetRevision()}); err != nil {
				errs = append(errs, fmt.Errorf("prune %s: %w", name, s.rpcError(err)))
				continue
			}
			fmt.Fprintf(s.env.Stdout, "%s pruned\n", name)
		}
	}
	return errors.Join(errs...)
}

// waitApplied waits until the applied images, then the applied nodes, are
// Ready.
func (s *session) waitApplied(ctx context.Context, done []applied, timeout time.Duration) error {
	nodes := map[string][]string{}
	var projects []string
	for _, a := range done {
		m := a.obj.Meta()
		if a.obj.Image != nil {
			if _, err := s.waitImage(ctx, m.GetProject(), m.GetName(), timeout); err != nil {
				return err
			}
			fmt.Fprintf(s.env.Stdout, "image/%s ready\n", m.GetName())
			continue
		}
		if _, ok := nodes[m.GetProject()]; !ok {
			projects = append(projects, m.GetProject())
		}
		nodes[m.GetProject()] = append(nodes[m.GetProject()], m.GetName())
	}
	for _, p := range projects {
		if err := s.waitNodes(ctx, p, nodes[p], condReady, timeout); err != nil {
			return err
		}
	}
	return nil
}

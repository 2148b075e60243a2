package cli

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
)

// GetBootScript of the FAKE API: a stand-in script that names the node and
// holds a marker where a real one holds CHAP secrets; the URL carries a new
// token on every call, as with --boot-tokens.
func (f *fakeSanboot) GetBootScript(_ context.Context, req *sanbootv1.GetRequest) (*sanbootv1.BootScript, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count("GetBootScript")
	project := api.ProjectOrDefault(req.GetProject())
	if _, ok := f.nodes[key(project, req.GetName())]; !ok {
		return nil, status.Errorf(codes.NotFound, "node %q not found in project %q", req.GetName(), project)
	}
	return &sanbootv1.BootScript{
		Script: "#!ipxe\n# fake script of " + project + "/" + req.GetName() + "\nset password FAKE-SECRET\n",
		Url:    "http://boot.example:8080/boot/" + project + "/" + req.GetName() + "?token=T" + strings.Repeat("A", f.calls["GetBootScript"]),
	}, nil
}

func TestBootScript(t *testing.T) {
	_, addr := seededFake(t)
	env := map[string]string{"SANBOOT_ENDPOINTS": addr}
	ctx := testCtx(t)

	r := runCLI(t, ctx, env, "boot-script", "node-01")
	if r.code != ExitOK || r.stdout != "#!ipxe\n# fake script of default/node-01\nset password FAKE-SECRET\n" || r.stderr != "" {
		t.Fatalf("boot-script node-01: %+v", r)
	}
	r = runCLI(t, ctx, env, "boot-script", "gpu-01", "-p", "lab", "--url")
	if r.code != ExitOK || r.stdout != "http://boot.example:8080/boot/lab/gpu-01?token=TAA\n" {
		t.Fatalf("boot-script --url: %+v", r)
	}
	r = runCLI(t, ctx, env, "boot-script", "node-01", "-o", "json")
	if r.code != ExitOK || !strings.Contains(r.stdout, `"script": "#!ipxe\n# fake script of default/node-01`) || !strings.Contains(r.stdout, `"url": "http://boot.example:8080/boot/default/node-01?token=`) {
		t.Fatalf("boot-script -o json: %+v", r)
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"boot-script"}, ExitUsage, "boot-script takes one NODE"},
		{[]string{"boot-script", "a", "b"}, ExitUsage, "boot-script takes one NODE"},
		{[]string{"boot-script", "node-01", "--url", "-o", "json"}, ExitUsage, "--url prints the URL alone"},
		{[]string{"boot-script", "node-01", "-o", "wide"}, ExitUsage, `-o "wide"`},
		{[]string{"boot-script", "nope"}, ExitNotFound, `node "nope" not found in project "default"`},
	} {
		r := runCLI(t, ctx, env, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit %d and %q", tc.args, r.code, r.stderr, r.stdout, tc.code, tc.msg)
		}
	}

	// No other command prints the secret.
	for _, args := range [][]string{{"get", "nodes", "node-01", "-o", "json"}, {"get", "nodes", "-o", "wide"}} {
		if r := runCLI(t, ctx, env, args...); strings.Contains(r.stdout, "FAKE-SECRET") {
			t.Errorf("%v prints a CHAP secret", args)
		}
	}
}

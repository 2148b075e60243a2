package boot

import (
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sanboot/sanboot/api"
	sanbootv1 "github.com/sanboot/sanboot/api/v1"
	"github.com/sanboot/sanboot/controlplane/state"
	"github.com/sanboot/sanboot/internal/golden"
)

// readyNode is a node as the API shows it once its agent serves its disk.
func readyNode(name string, mod ...func(*sanbootv1.Node)) *sanbootv1.Node {
	n := &sanbootv1.Node{
		Metadata: &sanbootv1.ObjectMeta{Project: "default", Name: name, Generation: 2, Uid: "uid-" + name},
		Spec:     &sanbootv1.NodeSpec{Image: "golden", Macs: []string{"52:54:00:00:00:01"}},
		Status: &sanbootv1.NodeStatus{
			Phase: api.PhaseReady, Agent: "rack1", TargetIqn: api.TargetIQN("", "default", name),
			Portals: []string{"10.0.2.2:3260"}, Lun: 1, ObservedGeneration: 2,
		},
	}
	for _, f := range mod {
		f(n)
	}
	return n
}

var chapSecret = &sanbootv1.ChapSecret{
	User: "default.n1", Secret: "SECRETSECRETSECRET42",
	MutualUser: "default.n1.target", MutualSecret: "MUTUALMUTUALMUTUAL42",
}

// efiImage is an image record whose spec names an EFI boot path.
func efiImage(path string) *sanbootv1.Image {
	return &sanbootv1.Image{Spec: &sanbootv1.ImageSpec{EfiBootPath: path}}
}

func chap(n *sanbootv1.Node)   { n.Spec.Chap = true }
func mutual(n *sanbootv1.Node) { n.Spec.Chap, n.Spec.MutualChap = true, true }

// TestScripts renders every kind of script and compares it with its golden
// file in testdata/ (go test -update rewrites them).
func TestScripts(t *testing.T) {
	plain := Settings{}
	withURL := Settings{URL: "http://10.0.0.1:8080/"}
	tokens := Settings{Tokens: true}
	n1 := state.Ref{Project: "default", Name: "n1"}
	cases := []struct {
		name     string
		settings Settings
		plan     Plan
		self     string
		ready    bool
		// want are lines the script must hold; absent must not appear.
		want, absent []string
	}{
		{name: "ready", settings: plain, plan: PlanNode(readyNode("n1"), nil, nil), self: plain.NodePath(n1, ""), ready: true,
			want: []string{"sanboot iscsi:10.0.2.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry", "clear password", "chain --replace --autofree /boot/default/n1 || goto sanboot-retry",
				"iseq ${platform} efi && goto sanboot-efi ||", `sanboot --filename \EFI\BOOT\BOOTX64.EFI iscsi:10.0.2.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry`},
			absent: []string{"set password"}},
		{name: "ready_by_mac", settings: withURL, plan: PlanNode(readyNode("n1"), nil, nil), self: WithPlatform(withURL.MACPath("52:54:00:00:00:01", ""), "efi"), ready: true,
			want: []string{"chain --replace --autofree http://10.0.0.1:8080/boot?mac=52-54-00-00-00-01&platform=efi || goto sanboot-retry"}},
		{name: "chap", settings: plain, plan: PlanNode(readyNode("n1", chap), nil, chapSecret), self: "/boot/default/n1", ready: true,
			want:   []string{"set username default.n1", "set password SECRETSECRETSECRET42", "clear reverse-password"},
			absent: []string{"MUTUAL"}},
		{name: "mutual_chap", settings: plain, plan: PlanNode(readyNode("n1", mutual), nil, chapSecret), self: "/boot/default/n1", ready: true,
			want: []string{"set reverse-username default.n1.target", "set reverse-password MUTUALMUTUALMUTUAL42"}},
		{name: "multipath", settings: plain, plan: PlanNode(readyNode("n1", func(n *sanbootv1.Node) {
			n.Status.Portals = []string{"10.0.2.2:3260", "[fd00::2]:3261", "[::ffff:10.0.3.2]:3262"}
			n.Status.Lun = 10 // iPXE reads LUNs in hex
			n.Spec.InitiatorIqn = "iqn.2026-11.io.example:host-1"
		}), nil, nil), self: "/boot/default/n1", ready: true,
			want: []string{"set initiator-iqn iqn.2026-11.io.example:host-1",
				"sanboot iscsi:10.0.2.2::3260:a:iqn.2026-11.io.sanboot:default.n1 iscsi:[fd00::2]::3261:a:iqn.2026-11.io.sanboot:default.n1 iscsi:10.0.3.2::3262:a:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry",
				`sanboot --filename \EFI\BOOT\BOOTX64.EFI iscsi:10.0.2.2::3260:a:iqn.2026-11.io.sanboot:default.n1 iscsi:[fd00::2]::3261:a:iqn.2026-11.io.sanboot:default.n1 iscsi:10.0.3.2::3262:a:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry`}},
		{name: "image_efi_path", settings: plain, plan: PlanNode(readyNode("n1"), efiImage(`\EFI\debian\shimx64.efi`), nil), self: "/boot/default/n1", ready: true,
			want:   []string{`sanboot --filename \EFI\debian\shimx64.efi iscsi:10.0.2.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry`},
			absent: []string{"BOOTX64"}},
		{name: "image_bad_efi_path", settings: plain, plan: PlanNode(readyNode("n1"), efiImage(`\EFI\a||shell.efi`), nil), self: "/boot/default/n1",
			want: []string{"spec.efiBootPath"}, absent: []string{"a||shell", `\EFI\a`}},
		{name: "token", settings: tokens, plan: PlanNode(readyNode("n1", chap), nil, chapSecret), self: tokens.NodePath(n1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), ready: true,
			want:   []string{"goto sanboot", "set password SECRETSECRETSECRET42"},
			absent: []string{"chain", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}},
		{name: "not_ready", settings: plain, plan: PlanNode(readyNode("n1", func(n *sanbootv1.Node) {
			n.Status.Phase, n.Status.Message = api.PhaseProvisioning, "cloning golden ${password} || reboot\n#!ipxe && shell 'x' \"y\" \\ {z}|&"
		}), nil, nil), self: "/boot/default/n1",
			want:   []string{"echo sanboot: node default/n1 is Provisioning: cloning golden __password_ __ reboot _!ipxe __ shell _x_ _y_ _ _z___", "chain --replace --autofree /boot/default/n1 || goto sanboot-retry"},
			absent: []string{"sanboot iscsi", "${password}"}},
		{name: "not_ready_token", settings: tokens, plan: PlanNode(readyNode("n1", chap, func(n *sanbootv1.Node) { n.Status.Phase = "" }), nil, chapSecret),
			self: tokens.NodePath(n1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
			want: []string{"echo sanboot: node default/n1 is Pending", "chain --replace --autofree /boot/default/n1?token=ABCDEFGHIJKLMNOPQRSTUVWXYZ || goto sanboot-retry"}, absent: []string{"SECRET"}},
		{name: "stale_generation", settings: plain, plan: PlanNode(readyNode("n1", func(n *sanbootv1.Node) { n.Metadata.Generation = 3 }), nil, nil), self: "/boot/default/n1",
			want: []string{"echo sanboot: node default/n1 is waiting for its agent to apply spec generation 3 (it has applied 2)"}},
		{name: "deleting", settings: plain, plan: PlanNode(readyNode("n1", func(n *sanbootv1.Node) { n.Metadata.DeleteTime = timestamppb.Now() }), nil, nil), self: "/boot/default/n1",
			want: []string{"echo sanboot: node default/n1 is being deleted"}},
		{name: "unknown_mac", settings: plain, plan: WaitPlan("no node has MAC 52:54:00:00:00:09; add it to a node's spec.macs"), self: plain.MACPath("52:54:00:00:00:09", ""),
			want: []string{"echo sanboot: no node has MAC 52:54:00:00:00:09; add it to a node_s spec.macs", "chain --replace --autofree /boot?mac=52-54-00-00-00-09 || goto sanboot-retry"}},
		{name: "bad_values", settings: plain, plan: PlanNode(readyNode("n1", chap, func(n *sanbootv1.Node) {
			n.Spec.InitiatorIqn = "iqn.2026-11.io.example:a b"
			n.Status.Portals = []string{"10.0.2.2:3260", "host:3260", "10.0.2.2:0"}
			n.Status.Lun = 256
		}), nil, &sanbootv1.ChapSecret{User: "u", Secret: "x\nset password y"}), self: "/boot/default/n1",
			want:   []string{"echo sanboot: node default/n1 cannot be booted with what its records hold:"},
			absent: []string{"set password", "sanboot iscsi"}},
		{name: "chap_without_secret", settings: plain, plan: PlanNode(readyNode("n1", chap), nil, nil), self: "/boot/default/n1",
			want: []string{"spec.chap is on but the node has no CHAP credentials"}, absent: []string{"sanboot iscsi"}},
		{name: "failover", settings: plain, plan: PlanNode(readyNode("n1"), nil, nil).WithFailover([]Failover{
			{Agent: "rack2", Portals: []string{"10.0.3.2:3260", "[fd00::3]:3260"}},
			{Agent: "rack3", Portals: []string{"host:3260", "10.0.2.2:3260"}}, // bad, and rack1's own: nothing left
			{Agent: "Bad Name", Portals: []string{"10.0.5.2:3260"}},
			{Agent: "rack4", Portals: []string{"10.0.4.2:3260"}},
		}), self: "/boot/default/n1", ready: true,
			want: []string{"sanboot iscsi:10.0.2.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-failover",
				`sanboot --filename \EFI\BOOT\BOOTX64.EFI iscsi:10.0.2.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-failover`,
				"echo sanboot: node default/n1: the portals of its agent failed (error ${errno}); trying the agents it fails over to (rack2, rack4)",
				"sanboot iscsi:10.0.3.2::3260:1:iqn.2026-11.io.sanboot:default.n1 iscsi:[fd00::3]::3260:1:iqn.2026-11.io.sanboot:default.n1 || sanboot iscsi:10.0.4.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry",
				`sanboot --filename \EFI\BOOT\BOOTX64.EFI iscsi:10.0.3.2::3260:1:iqn.2026-11.io.sanboot:default.n1 iscsi:[fd00::3]::3260:1:iqn.2026-11.io.sanboot:default.n1 || sanboot --filename \EFI\BOOT\BOOTX64.EFI iscsi:10.0.4.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry`,
				"chain --replace --autofree /boot/default/n1 || goto sanboot-retry"},
			absent: []string{"10.0.5.2", "rack3", "host:"}},
		{name: "failover_token", settings: tokens, plan: PlanNode(readyNode("n1", chap), nil, chapSecret).WithFailover([]Failover{{Agent: "rack2", Portals: []string{"10.0.3.2:3260"}}}),
			self: tokens.NodePath(n1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), ready: true,
			want:   []string{"sanboot iscsi:10.0.3.2::3260:1:iqn.2026-11.io.sanboot:default.n1 || goto sanboot-retry", "goto sanboot"},
			absent: []string{"chain", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}},
		{name: "failover_waiting", settings: plain, plan: PlanNode(readyNode("n1", func(n *sanbootv1.Node) { n.Status.Phase = api.PhaseUnavailable }), nil, nil).
			WithFailover([]Failover{{Agent: "rack2", Portals: []string{"10.0.3.2:3260"}}}), self: "/boot/default/n1",
			want: []string{"echo sanboot: node default/n1 is Unavailable"}, absent: []string{"10.0.3.2", "sanboot-failover"}},
		{name: "no_portals", settings: plain, plan: PlanNode(readyNode("n1", func(n *sanbootv1.Node) { n.Status.Portals = nil }), nil, nil), self: "/boot/default/n1",
			want: []string{"status.portals: the agent reported no portal"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.plan.Ready() != tc.ready {
				t.Fatalf("Ready() = %v, want %v (reason %q)", tc.plan.Ready(), tc.ready, tc.plan.Reason())
			}
			got := tc.settings.Render(tc.plan, tc.self)
			checkScript(t, got)
			lines := strings.Split(got, "\n")
			for _, w := range tc.want {
				if !containsLine(lines, w) {
					t.Errorf("script lacks %q:\n%s", w, got)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(got, a) {
					t.Errorf("script holds %q:\n%s", a, got)
				}
			}
			golden.Check(t, tc.name+".ipxe", got)
		})
	}
}

func TestGeneric(t *testing.T) {
	for name, s := range map[string]Settings{"generic": {}, "generic_url": {URL: "http://10.0.0.1:8080"}} {
		t.Run(name, func(t *testing.T) {
			got := s.Generic()
			checkScript(t, got)
			want := "chain --replace --autofree " + s.URL + "/boot?mac=${net0/mac:hexhyp}&platform=${platform} || goto sanboot-retry"
			if !containsLine(strings.Split(got, "\n"), want) {
				t.Errorf("script lacks %q:\n%s", want, got)
			}
			golden.Check(t, name+".ipxe", got)
		})
	}
}

// containsLine reports whether some line holds want.
func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if strings.Contains(l, want) {
			return true
		}
	}
	return false
}

// scriptLine is what every line of a sanboot script looks like: the only
// commands it uses, and no setting expansion but its own.
var (
	allowedCommands = map[string]bool{"isset": true, "set": true, "clear": true, "echo": true, "sanboot": true,
		"sleep": true, "iseq": true, "inc": true, "chain": true, "goto": true}
	expansion        = regexp.MustCompile(`\$\{[^}]*\}`)
	allowedExpansion = map[string]bool{"${sanboot-wait}": true, "${errno}": true, "${net0/mac:hexhyp}": true, "${platform}": true}
)

// checkScript fails unless script is made only of the commands sanboot
// uses, expands only its own settings, and has no stray '$' or control
// characters: nothing from a record turned into a command.
func checkScript(t *testing.T, script string) {
	t.Helper()
	if !strings.HasPrefix(script, "#!ipxe\n") || !strings.HasSuffix(script, "\n") {
		t.Fatalf("script does not start with #!ipxe or lacks a final newline:\n%s", script)
	}
	for i, line := range strings.Split(strings.TrimSuffix(script, "\n"), "\n")[1:] {
		for _, r := range line {
			if r < 0x20 || r > 0x7e {
				t.Errorf("line %d holds control or non-ASCII character %q", i+2, r)
			}
		}
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, ":sanboot") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 0 || !allowedCommands[fields[0]] {
			t.Errorf("line %d: unexpected command %q", i+2, line)
			continue
		}
		for _, f := range fields[1:] {
			if strings.HasPrefix(f, "#") {
				t.Errorf("line %d: a word starts a comment: %q", i+2, line)
			}
		}
		for _, e := range expansion.FindAllString(line, -1) {
			if !allowedExpansion[e] {
				t.Errorf("line %d expands %s: %q", i+2, e, line)
			}
		}
		if strings.Count(expansion.ReplaceAllString(line, ""), "$") > 0 {
			t.Errorf("line %d holds a stray '$': %q", i+2, line)
		}
		if fields[0] == "sanboot" && len(fields) > 2 && fields[1] == "--filename" {
			if err := api.ValidateEFIBootPath("--filename", fields[2]); err != nil {
				t.Errorf("line %d: %v", i+2, err)
			}
			line = strings.ReplaceAll(line, fields[2], "") // its only backslashes
		}
		if strings.ContainsAny(line, "'\"\\`") {
			t.Errorf("line %d holds a quote or a backslash: %q", i+2, line)
		}
		if fields[0] == "echo" && (strings.Contains(line, "||") || strings.Contains(line, "&&")) {
			t.Errorf("line %d: an echo chains a command: %q", i+2, line)
		}
	}
	// Every goto has its label.
	labels := map[string]bool{}
	for _, l := range strings.Split(script, "\n") {
		if strings.HasPrefix(l, ":") {
			labels[l[1:]] = true
		}
	}
	for _, m := range gotoTarget.FindAllStringSubmatch(script, -1) {
		if !labels[m[1]] {
			t.Errorf("goto %s: no such label in\n%s", m[1], script)
		}
	}
}

var gotoTarget = regexp.MustCompile(`goto (\S+)`)

func TestEchoText(t *testing.T) {
	cases := map[string]string{
		"plain words: ok (1/2)":     "plain words: ok (1/2)",
		"a\nb\tc  d":                "a b c d",
		"${x} || y && z # c":        "__x_ __ y __ z _ c",
		"quote 'a' \"b\" \\ `c`":    "quote _a_ _b_ _ _c_",
		"ünïcode":                   "_n_code",
		strings.Repeat("x", 400):    strings.Repeat("x", 300) + "...",
		"-n starts like an option":  "-n starts like an option",
		"\x00\x1b[31mred\x1b[0m":    "__[31mred_[0m",
		"{braces} and <angles> [1]": "_braces_ and <angles> [1]",
	}
	for in, want := range cases {
		if got := echoText(in); got != want {
			t.Errorf("echoText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSettingsValidate(t *testing.T) {
	for _, ok := range []string{"", "http://10.0.0.1:8080", "https://boot.example.com/sanboot/", "http://[fd00::1]:8080"} {
		if err := (Settings{URL: ok}).Validate(); err != nil {
			t.Errorf("URL %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"10.0.0.1:8080", "ftp://x", "http://", "http://x/?a=b", "http://x/#f", "http://u:p@x/", "http://x/a b", "http://x/${y}"} {
		if err := (Settings{URL: bad}).Validate(); err == nil {
			t.Errorf("URL %q accepted", bad)
		}
	}
}

func TestURLs(t *testing.T) {
	ref := state.Ref{Project: "lab", Name: "n1"}
	cases := []struct{ got, want string }{
		{Settings{}.NodePath(ref, ""), "/boot/lab/n1"},
		{Settings{}.NodePath(ref, "TOKEN"), "/boot/lab/n1?token=TOKEN"},
		{Settings{URL: "http://b:8080/"}.NodePath(ref, ""), "http://b:8080/boot/lab/n1"},
		{Settings{}.MACPath("52:54:00:00:00:01", "T"), "/boot?mac=52-54-00-00-00-01&token=T"},
		{Settings{Listen: "127.0.0.1:8080"}.NodeURL(ref, ""), "http://127.0.0.1:8080/boot/lab/n1"},
		{WithPlatform(Settings{}.NodePath(ref, ""), "efi"), "/boot/lab/n1?platform=efi"},
		{WithPlatform(Settings{}.MACPath("52:54:00:00:00:01", "T"), "pcbios"), "/boot?mac=52-54-00-00-00-01&token=T&platform=pcbios"},
		{WithPlatform("/boot/lab/n1", ""), "/boot/lab/n1"},
		{Settings{URL: "http://b", Listen: "127.0.0.1:8080"}.NodeURL(ref, ""), "http://b/boot/lab/n1"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestValidatePlatform(t *testing.T) {
	for _, ok := range []string{"", "efi", "pcbios", "linux", "riscv-sbi"} {
		if err := ValidatePlatform(ok); err != nil {
			t.Errorf("platform %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"EFI", "efi ", "efi||shell", "${x}", "a&b", strings.Repeat("x", 33)} {
		if err := ValidatePlatform(bad); err == nil {
			t.Errorf("platform %q accepted", bad)
		}
	}
}

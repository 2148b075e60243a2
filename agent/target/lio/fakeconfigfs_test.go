package lio

import (
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// fakeConfigfs is a FAKE of LIO's configfs for unit tests: a temp-dir tree
// that behaves, for the operations the driver makes, the way Debian's 6.1
// kernel was seen to behave (see kernel_test.go and hack/e2e-lio.sh for
// the real thing):
//
//   - mkdir makes the directory's default attributes and groups; rmdir
//     removes them, and fails with ENOTEMPTY while anything else is in it;
//   - a backstore takes control before enable, enable once (EEXIST
//     after), its VPD serial only while no LUN links to it (EINVAL), and
//     emulate_tpu/emulate_tpws only once enabled: before, the real kernel
//     oopses, so the fake fails the test;
//   - a LUN links to an enabled backstore only (ENODEV); a backstore or
//     LUN that something links to cannot be removed (EBUSY);
//   - a portal group's enable refuses 1 twice (EINVAL), its
//     authentication defaults to 1; removing an ACL or disabling ends its
//     session;
//   - CHAP values are stored as written: a trailing newline fails the
//     test, since it would become part of the secret.
//
// It does not emulate iSCSI: logins are simulated (login), and what the
// kernel does with the configuration is only checked in the kernel tests.
type fakeConfigfs struct {
	t    testing.TB
	root string

	mu         sync.Mutex
	defaults   map[string]bool   // rel paths made by the fake kernel
	devs       map[string]*fdev  // rel dev dir -> state
	ops        []string          // mutating operations, in order
	busy       map[string]int    // rel path -> EBUSY answers left for Remove and WriteFile
	failAt     int               // fail the failAt-th mutating op (1-based) with EIO; 0: never
	violations []string          // what a real kernel would not forgive
	sessions   map[string]string // rel acl dir -> initiator logged in
}

type fdev struct {
	params  map[string]string
	enabled bool
}

func newFakeConfigfs(t testing.TB) *fakeConfigfs {
	root := filepath.Join(t.TempDir(), "target")
	f := &fakeConfigfs{t: t, root: root, defaults: map[string]bool{}, devs: map[string]*fdev{},
		busy: map[string]int{}, sessions: map[string]string{}}
	must(t, os.MkdirAll(filepath.Join(root, "core", "alua"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "version"), []byte("Target Engine Core ConfigFS Infrastructure v5.0\n"), 0o644))
	t.Cleanup(func() {
		if len(f.violations) > 0 {
			t.Errorf("the driver did what the kernel would refuse or crash on:\n%s", strings.Join(f.violations, "\n"))
		}
	})
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fakeConfigfs) rel(p string) (string, []string) {
	r, err := filepath.Rel(f.root, p)
	if err != nil || strings.HasPrefix(r, "..") {
		f.violate("path %s is outside the configfs root %s", p, f.root)
		return r, nil
	}
	return r, strings.Split(r, "/")
}

func (f *fakeConfigfs) violate(format string, args ...any) {
	f.violations = append(f.violations, fmt.Sprintf(format, args...))
}

// kind names what a directory is, from its path.
func dirKind(parts []string) string {
	n := len(parts)
	switch {
	case n == 1 && parts[0] == "iscsi":
		return "fabric"
	case n == 2 && parts[0] == "iscsi":
		return "target"
	case n == 3 && parts[0] == "iscsi" && strings.HasPrefix(parts[2], "tpgt_"):
		return "tpg"
	case n == 5 && parts[0] == "iscsi" && parts[3] == "np":
		return "np"
	case n == 5 && parts[0] == "iscsi" && parts[3] == "lun" && strings.HasPrefix(parts[4], "lun_"):
		return "lun"
	case n == 5 && parts[0] == "iscsi" && parts[3] == "acls":
		return "acl"
	case n == 6 && parts[0] == "iscsi" && parts[3] == "acls" && strings.HasPrefix(parts[5], "lun_"):
		return "mapped"
	case n == 2 && parts[0] == "core":
		if _, _, ok := hbaName(parts[1]); ok {
			return "hba"
		}
	case n == 3 && parts[0] == "core":
		return "dev"
	}
	return ""
}

// step records a mutating operation and fails it when told to.
func (f *fakeConfigfs) step(op string) error {
	f.ops = append(f.ops, op)
	if f.failAt > 0 && len(f.ops) == f.failAt {
		return syscall.EIO
	}
	return nil
}

func (f *fakeConfigfs) makeDefaults(rel string, entries map[string]string) {
	for name, val := range entries {
		p := filepath.Join(f.root, rel, name)
		must(f.t, os.MkdirAll(filepath.Dir(p), 0o755))
		for d := filepath.Dir(filepath.Join(rel, name)); d != rel; d = filepath.Dir(d) {
			f.defaults[d] = true
		}
		if strings.HasSuffix(name, "/") {
			must(f.t, os.MkdirAll(p, 0o755))
		} else {
			must(f.t, os.WriteFile(p, []byte(val), 0o644))
		}
		f.defaults[filepath.Join(rel, name)] = true
	}
}

func (f *fakeConfigfs) Mkdir(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rel, parts := f.rel(name)
	kind := dirKind(parts)
	if err := f.step("mkdir " + rel); err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	if kind == "" {
		f.violate("mkdir %s: configfs has no group there", rel)
		return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.EPERM}
	}
	if kind == "np" {
		if _, err := netip.ParseAddrPort(parts[4]); err != nil {
			return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.EINVAL}
		}
	}
	if err := os.Mkdir(name, 0o755); err != nil {
		return err
	}
	switch kind {
	case "fabric":
		f.makeDefaults(rel, map[string]string{"discovery_auth/": "", "lio_version": "Datera Inc. iSCSI Target v4.1.0\n"})
	case "target":
		f.makeDefaults(rel, map[string]string{"fabric_statistics/": ""})
	case "tpg":
		f.makeDefaults(rel, map[string]string{
			"enable": "0\n", "acls/": "", "lun/": "", "np/": "", "param/": "", "auth/": "", "dynamic_sessions": "",
			"attrib/authentication": "1\n", "attrib/generate_node_acls": "0\n", "attrib/demo_mode_write_protect": "1\n",
			"attrib/cache_dynamic_acls": "0\n",
		})
	case "np":
		f.makeDefaults(rel, map[string]string{"iser": "0\n"})
	case "lun":
		f.makeDefaults(rel, map[string]string{"alua_tg_pt_offline": "0\n"})
	case "acl":
		f.makeDefaults(rel, map[string]string{
			"attrib/authentication": "-1\n", "auth/userid": "\n", "auth/password": "\n", "auth/userid_mutual": "\n",
			"auth/password_mutual": "\n", "auth/authenticate_target": "0\n", "cmdsn_depth": "64\n",
			"info": "No active iSCSI Session for Initiator Endpoint: " + parts[4] + "\n",
		})
	case "mapped":
		f.makeDefaults(rel, map[string]string{"write_protect": "0\n"})
	case "hba":
		f.makeDefaults(rel, map[string]string{"hba_info": "HBA Index: 1 plugin: fileio version: v5.0\n", "hba_mode": "0\n"})
	case "dev":
		f.devs[rel] = &fdev{params: map[string]string{}}
		f.makeDefaults(rel, map[string]string{
			"control": "", "enable": "0\n", "udev_path": "\n", "alias": "\n",
			"info":               "Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 512  HwMaxSectors: 16384\n",
			"attrib/emulate_tpu": "0\n", "attrib/emulate_tpws": "0\n", "attrib/block_size": "512\n",
			"wwn/vpd_unit_serial": "T10 VPD Unit Serial Number: \n",
			"alua/":               "", "pr/": "", "statistics/": "",
		})
	}
	return nil
}

// links lists the symlinks under the tree that point to target (abs).
func (f *fakeConfigfs) linksTo(target string) []string {
	var out []string
	filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink != 0 {
			if l, _ := os.Readlink(p); filepath.Clean(l) == filepath.Clean(target) {
				out = append(out, p)
			}
		}
		return nil
	})
	return out
}

func (f *fakeConfigfs) Remove(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rel, parts := f.rel(name)
	fi, err := os.Lstat(name)
	if err != nil {
		return err
	}
	if f.busy[rel] > 0 {
		f.busy[rel]--
		f.ops = append(f.ops, "remove "+rel+" (EBUSY)")
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.EBUSY}
	}
	if err := f.step("remove " + rel); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return os.Remove(name)
	}
	if f.defaults[rel] {
		f.violate("rmdir %s: a default group cannot be removed", rel)
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.EPERM}
	}
	kind := dirKind(parts)
	if (kind == "dev" || kind == "lun") && len(f.linksTo(name)) > 0 {
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.EBUSY}
	}
	es, err := os.ReadDir(name)
	if err != nil {
		return err
	}
	for _, e := range es {
		if !f.defaults[filepath.Join(rel, e.Name())] {
			return &fs.PathError{Op: "remove", Path: name, Err: syscall.ENOTEMPTY}
		}
	}
	for p := range f.defaults {
		if strings.HasPrefix(p, rel+"/") {
			delete(f.defaults, p)
		}
	}
	delete(f.devs, rel)
	delete(f.sessions, rel)
	return os.RemoveAll(name)
}

func (f *fakeConfigfs) Symlink(target, link string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rel, parts := f.rel(link)
	trel, tparts := f.rel(target)
	if err := f.step("symlink " + rel + " -> " + trel); err != nil {
		return &os.LinkError{Op: "symlink", Old: target, New: link, Err: err}
	}
	dir := parts[:len(parts)-1]
	es, _ := os.ReadDir(filepath.Dir(link))
	for _, e := range es {
		if e.Type()&fs.ModeSymlink != 0 {
			return &os.LinkError{Op: "symlink", Old: target, New: link, Err: syscall.EEXIST}
		}
	}
	switch dirKind(dir) {
	case "lun":
		dev := f.devs[trel]
		if dirKind(tparts) != "dev" || dev == nil {
			f.violate("symlink %s -> %s: a LUN links to a backstore", rel, trel)
			return &os.LinkError{Op: "symlink", Old: target, New: link, Err: syscall.EINVAL}
		}
		if !dev.enabled {
			return &os.LinkError{Op: "symlink", Old: target, New: link, Err: syscall.ENODEV}
		}
	case "mapped":
		if dirKind(tparts) != "lun" || strings.Join(tparts[:3], "/") != strings.Join(dir[:3], "/") {
			f.violate("symlink %s -> %s: a mapped LUN links to a LUN of its own portal group", rel, trel)
			return &os.LinkError{Op: "symlink", Old: target, New: link, Err: syscall.EINVAL}
		}
		if ls, _ := os.ReadDir(target); !slices.ContainsFunc(ls, func(e fs.DirEntry) bool { return e.Type()&fs.ModeSymlink != 0 }) {
			return &os.LinkError{Op: "symlink", Old: target, New: link, Err: syscall.ENODEV}
		}
	default:
		f.violate("symlink %s: configfs allows no link there", rel)
		return &os.LinkError{Op: "symlink", Old: target, New: link, Err: syscall.EPERM}
	}
	return os.Symlink(target, link)
}

func (f *fakeConfigfs) WriteFile(name, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rel, parts := f.rel(name)
	shown := value
	if strings.Contains(rel, "password") {
		shown = fmt.Sprintf("<secret, %d bytes>", len(value))
	}
	if f.busy[rel] > 0 {
		f.busy[rel]--
		f.ops = append(f.ops, "write "+rel+" "+shown+" (EBUSY)")
		return &fs.PathError{Op: "write", Path: name, Err: syscall.EBUSY}
	}
	if err := f.step("write " + rel + " " + shown); err != nil {
		return &fs.PathError{Op: "write", Path: name, Err: err}
	}
	if _, err := os.Lstat(name); err != nil {
		return err
	}
	werr := func(e error) error { return &fs.PathError{Op: "write", Path: name, Err: e} }
	file := parts[len(parts)-1]
	dir := parts[:len(parts)-1]
	store := value + "\n"
	if len(dir) > 0 && (dir[len(dir)-1] == "attrib" || dir[len(dir)-1] == "auth" || dir[len(dir)-1] == "wwn") {
		dir = dir[:len(dir)-1]
	}
	switch kind := dirKind(dir); {
	case kind == "dev":
		dev := f.devs[strings.Join(dir, "/")]
		switch file {
		case "control":
			if dev.enabled {
				f.violate("write %s after enable: the kernel takes it, shows it, and goes on serving the old values", rel)
			}
			for kv := range strings.SplitSeq(value, ",") {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return werr(syscall.EINVAL)
				}
				dev.params[k] = v
			}
			return nil
		case "enable":
			if value != "1" {
				return werr(syscall.EINVAL)
			}
			if dev.enabled {
				return werr(syscall.EEXIST)
			}
			var info string
			switch k, _, _ := hbaName(dir[1]); k {
			case kindFileio:
				if dev.params["fd_dev_name"] == "" || dev.params["fd_dev_size"] == "" {
					return werr(syscall.EINVAL)
				}
				info = fmt.Sprintf("        TCM FILEIO ID: 0        File: %s  Size: %s  Mode: O_DSYNC Async: 0\n",
					dev.params["fd_dev_name"], dev.params["fd_dev_size"])
			case kindIblock:
				if dev.params["udev_path"] == "" {
					return werr(syscall.EINVAL)
				}
				info = fmt.Sprintf("iBlock device: loop0  UDEV PATH: %s  readonly: 0\n        Major: 7 Minor: 0  CLAIMED: IBLOCK\n",
					dev.params["udev_path"])
			}
			dev.enabled = true
			must(f.t, os.WriteFile(filepath.Join(f.root, strings.Join(dir, "/"), "info"),
				[]byte("Status: DEACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 16384\n"+info), 0o644))
		case "emulate_tpu", "emulate_tpws":
			if !dev.enabled {
				f.violate("write %s before the backstore is enabled: Debian's 6.1 kernel oopses (NULL pointer in *_configure_unmap)", rel)
				return werr(syscall.EIO)
			}
			if value != "0" && value != "1" {
				return werr(syscall.EINVAL)
			}
		case "vpd_unit_serial":
			if len(f.linksTo(filepath.Join(f.root, strings.Join(dir, "/")))) > 0 {
				return werr(syscall.EINVAL)
			}
			store = "T10 VPD Unit Serial Number: " + strings.TrimSpace(value) + "\n"
		default:
			f.violate("write %s: the driver has no business there", rel)
		}
	case kind == "tpg":
		switch file {
		case "enable":
			cur, _ := os.ReadFile(name)
			if value == "1" && string(cur) == "1\n" {
				return werr(syscall.EINVAL)
			}
			if value != "0" && value != "1" {
				return werr(syscall.EINVAL)
			}
			if value == "0" {
				for acl := range f.sessions {
					if strings.HasPrefix(acl, strings.Join(dir, "/")+"/") {
						f.logout(acl)
					}
				}
			}
		case "authentication", "generate_node_acls":
			if value != "0" && value != "1" {
				return werr(syscall.EINVAL)
			}
		default:
			f.violate("write %s: the driver has no business there", rel)
		}
	case kind == "acl":
		switch file {
		case "authentication":
			if value != "-1" && value != "0" && value != "1" {
				return werr(syscall.EINVAL)
			}
		case "userid", "password", "userid_mutual", "password_mutual":
			if strings.HasSuffix(value, "\n") {
				f.violate("write %s with a trailing newline: LIO keeps it as part of the value", rel)
			}
		default:
			f.violate("write %s: the driver has no business there", rel)
		}
	default:
		f.violate("write %s: the driver has no business there", rel)
	}
	return os.WriteFile(name, []byte(store), 0o644)
}

func (f *fakeConfigfs) Readlink(name string) (string, error) { return os.Readlink(name) }
func (f *fakeConfigfs) ReadFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	return string(b), err
}
func (f *fakeConfigfs) ReadDir(name string) ([]fs.DirEntry, error) { return os.ReadDir(name) }
func (f *fakeConfigfs) Lstat(name string) (fs.FileInfo, error)     { return os.Lstat(name) }

// login simulates an initiator logged in to the target iqn.
func (f *fakeConfigfs) login(iqn, initiator string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rel := filepath.Join("iscsi", iqn, tpgName, "acls", initiator)
	f.sessions[rel] = initiator
	// The kernel's format (testdata/acl-info), from 10.0.2.15.
	info := "InitiatorName: " + initiator + "\nInitiatorAlias: \nLIO Session ID: 1   ISID: 0x40 00 01 37 00 00  TSIH: 1  SessionType: Normal\n" +
		"Session State: TARG_SESS_STATE_LOGGED_IN\n----------------------[iSCSI Connections]-------------------------\n" +
		"CID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN\n   Address 10.0.2.15 TCP  StatSN: 0x2d6b3c0a\n"
	must(f.t, os.WriteFile(filepath.Join(f.root, rel, "info"), []byte(info), 0o644))
}

func (f *fakeConfigfs) logout(rel string) {
	in := f.sessions[rel]
	delete(f.sessions, rel)
	os.WriteFile(filepath.Join(f.root, rel, "info"), []byte("No active iSCSI Session for Initiator Endpoint: "+in+"\n"), 0o644)
}

// takeOps returns the mutating operations since the last call.
func (f *fakeConfigfs) takeOps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// tree lists every entry under the root with the values of attributes,
// for comparing two states.
func (f *fakeConfigfs) tree() string {
	var b strings.Builder
	filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == f.root {
			return nil
		}
		rel, _ := filepath.Rel(f.root, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			r, _ := filepath.Rel(f.root, l)
			fmt.Fprintf(&b, "%s -> %s\n", rel, r)
		case d.IsDir():
			fmt.Fprintf(&b, "%s/\n", rel)
		default:
			v, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%s = %q\n", rel, v)
		}
		return nil
	})
	return b.String()
}

package lio

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// The configfs layout the driver builds for one target (paths relative to
// the root, /sys/kernel/config/target):
//
//	core/fileio_N/<target IQN>              backstore (iblock_N for a block device)
//	iscsi/<target IQN>/tpgt_1/              target portal group
//	    np/<IP:PORT>/                        portal
//	    lun/lun_0/backstore -> core/...      LUN 0
//	    acls/<initiator IQN>/lun_0/map -> ../../../lun/lun_0
//	    acls/<initiator IQN>/auth/{userid,password,userid_mutual,password_mutual}
//	    attrib/{generate_node_acls,authentication}, enable
const (
	// LUN is the LUN under which LIO exports a target's disk.
	LUN = 0
	// DefaultRoot is where LIO's configfs tree is.
	DefaultRoot = "/sys/kernel/config/target"

	fabricDir = "iscsi"
	coreDir   = "core"
	tpgName   = "tpgt_1"
	lunLink   = "backstore" // the symlink in lun/lun_0 to the backstore
	mapLink   = "map"       // the symlink in acls/<initiator>/lun_0 to lun/lun_0

	kindFileio = "fileio"
	kindIblock = "iblock"

	// unset is what LIO's CHAP attributes take to forget a value; they
	// read back as "NULL" afterwards (and as "" before anything was set).
	unset = "NULL"
)

func lunDirName(n int) string { return "lun_" + strconv.Itoa(n) }

// lunNumber parses "lun_N".
func lunNumber(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "lun_")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// tpgNumber parses "tpgt_N".
func tpgNumber(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "tpgt_")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// hbaName parses an HBA directory name, "<plugin>_<index>".
func hbaName(name string) (kind string, index int, ok bool) {
	i := strings.LastIndexByte(name, '_')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil || n < 0 {
		return "", 0, false
	}
	return name[:i], n, true
}

// portalDir is the np/ directory name LIO takes for a portal: IP:PORT,
// [IPv6]:PORT.
func portalDir(ap netip.AddrPort) string { return ap.String() }

// parsePortalDir reads an np/ directory name. LIO keeps the name as it was
// given ("[0:0:0:0:0:0:0:1]:3260" and "[::1]:3260" are both valid), so
// portals are compared parsed.
func parsePortalDir(name string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(name)
	return ap, err == nil
}

// isTargetName tells target directories in iscsi/ from the fabric's own
// entries (discovery_auth, lio_version, cpus_allowed_list).
func isTargetName(name string) bool {
	return strings.HasPrefix(name, "iqn.") || strings.HasPrefix(name, "eui.") || strings.HasPrefix(name, "naa.")
}

// backstoreRef names a backstore: core/<HBA>/<Name>.
type backstoreRef struct {
	HBA, Name string
}

func (b backstoreRef) String() string { return coreDir + "/" + b.HBA + "/" + b.Name }

// kind is the backstore's plugin, from its HBA's name.
func (b backstoreRef) kind() string {
	k, _, _ := hbaName(b.HBA)
	return k
}

// refFromLink reads the backstore a LUN's symlink points to. The kernel
// reports a relative path (../../../../../../target/core/fileio_0/disk),
// the fake an absolute one: the last two elements are what counts.
func refFromLink(link string) (backstoreRef, error) {
	link = filepath.Clean(link)
	name := filepath.Base(link)
	hba := filepath.Base(filepath.Dir(link))
	core := filepath.Base(filepath.Dir(filepath.Dir(link)))
	if _, _, ok := hbaName(hba); !ok || core != coreDir {
		return backstoreRef{}, fmt.Errorf("symlink to %q is not a backstore (core/<hba>/<name>)", link)
	}
	return backstoreRef{HBA: hba, Name: name}, nil
}

// The paths of one target.
type paths struct{ root string }

func (p paths) core() string                    { return filepath.Join(p.root, coreDir) }
func (p paths) fabric() string                  { return filepath.Join(p.root, fabricDir) }
func (p paths) target(iqn string) string        { return filepath.Join(p.root, fabricDir, iqn) }
func (p paths) tpg(iqn string) string           { return filepath.Join(p.root, fabricDir, iqn, tpgName) }
func (p paths) backstore(b backstoreRef) string { return filepath.Join(p.root, coreDir, b.HBA, b.Name) }
func (p paths) hba(name string) string          { return filepath.Join(p.root, coreDir, name) }

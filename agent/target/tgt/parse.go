package tgt

import (
	"bufio"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sanboot/sanboot/agent/target"
)

// tgtTarget is one target as "tgtadm --lld iscsi --mode target --op show"
// prints it.
type tgtTarget struct {
	TID      int
	IQN      string
	Driver   string
	State    string
	Sessions []session
	LUNs     []lun
	// InAccounts are the incoming CHAP accounts in tgtd's slot order.
	InAccounts []string
	OutAccount string
	// ACL holds initiator addresses (ALL, IP, IP/mask) and names alike,
	// as tgtd prints them.
	ACL []string
}

// session is one I_T nexus (an iSCSI session).
type session struct {
	ID          uint64
	Initiator   string
	Connections []connection
}

type connection struct {
	ID      uint32
	Address string
}

// lun is one logical unit of a target.
type lun struct {
	Num  uint64
	Type string
	// Serial is the VPD unit serial (scsi_sn).
	Serial string
	// SizeMB is the size as tgtd prints it (see tgtMB), -1 if unknown.
	SizeMB    int64
	BlockSize int
	Online    bool
	Thin      bool
	BSType    string
	// Path is the backing store path, "" for none.
	Path string
}

// lun returns the logical unit numbered n, or nil.
func (t *tgtTarget) lun(n uint64) *lun {
	for i := range t.LUNs {
		if t.LUNs[i].Num == n {
			return &t.LUNs[i]
		}
	}
	return nil
}

// initiators returns who is logged in, for error messages.
func (t *tgtTarget) initiators() []string {
	var out []string
	for _, s := range t.Sessions {
		who := s.Initiator
		if who == "" {
			who = "session " + strconv.FormatUint(s.ID, 10)
		}
		for _, c := range s.Connections {
			if c.Address != "" {
				who += " from " + c.Address
				break
			}
		}
		out = append(out, who)
	}
	return out
}

// sessions returns who is logged in, as target.Driver's Sessions says
// it: each session's initiator with the address of its first connection
// that has one, sorted.
func (t *tgtTarget) sessions() []target.Session {
	out := make([]target.Session, 0, len(t.Sessions))
	for _, s := range t.Sessions {
		ses := target.Session{Initiator: s.Initiator}
		for _, c := range s.Connections {
			if c.Address != "" {
				ses.Address = c.Address
				break
			}
		}
		out = append(out, ses)
	}
	return target.SortSessions(out)
}

// hasAccount reports whether user is bound to t in either direction.
func (t *tgtTarget) hasAccount(user string) bool {
	if t.OutAccount == user {
		return true
	}
	for _, u := range t.InAccounts {
		if u == user {
			return true
		}
	}
	return false
}

// The section headers of a target, printed one tab (4 spaces) deep.
const (
	secSystem  = "System information:"
	secNexus   = "I_T nexus information:"
	secLUN     = "LUN information:"
	secAccount = "Account information:"
	secACL     = "ACL information:"
	// headerIndent is the deepest indentation of a section header; entries
	// (account names, ACL entries, LUN and nexus lines) are deeper, so that
	// an account named like a header cannot be taken for one.
	headerIndent = 4
)

// parseTargets parses the output of "tgtadm --lld iscsi --mode target --op
// show". Unknown keys are ignored, so that newer tgt versions parse; a line
// that fits nowhere is an error, so that garbage is not taken for "no
// targets".
func parseTargets(out string) ([]tgtTarget, error) {
	var (
		targets []tgtTarget
		t       *tgtTarget
		section string
		curLUN  *lun
		curSess *session
	)
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		raw := strings.TrimRight(sc.Text(), " \t\r")
		if raw == "" {
			continue
		}
		text := strings.TrimLeft(raw, " \t")
		indent := indentOf(raw)
		bad := func(why string) error {
			return fmt.Errorf("tgtadm target show, line %d %q: %s", lineNo, raw, why)
		}
		if indent == 0 {
			rest, ok := strings.CutPrefix(text, "Target ")
			if !ok {
				return nil, bad(`want "Target <tid>: <name>"`)
			}
			num, name, ok := strings.Cut(rest, ": ")
			tid, err := strconv.Atoi(num)
			if !ok || err != nil || tid <= 0 || name == "" {
				return nil, bad(`want "Target <tid>: <name>"`)
			}
			targets = append(targets, tgtTarget{TID: tid, IQN: name})
			t = &targets[len(targets)-1]
			section, curLUN, curSess = "", nil, nil
			continue
		}
		if t == nil {
			return nil, bad("indented line before the first target")
		}
		if indent <= headerIndent {
			switch text {
			case secSystem, secNexus, secLUN, secAccount, secACL:
				section, curLUN, curSess = text, nil, nil
			default:
				section = "" // an unknown section: skip its lines
			}
			continue
		}
		key, val, kv := strings.Cut(text, ":")
		val = strings.TrimSpace(val)
		switch section {
		case secSystem:
			switch key {
			case "Driver":
				t.Driver = val
			case "State":
				t.State = val
			}
		case secNexus:
			switch key {
			case "I_T nexus":
				id, err := strconv.ParseUint(val, 10, 64)
				if err != nil {
					return nil, bad("bad I_T nexus number")
				}
				t.Sessions = append(t.Sessions, session{ID: id})
				curSess = &t.Sessions[len(t.Sessions)-1]
			case "Initiator":
				if curSess == nil {
					return nil, bad("initiator outside an I_T nexus")
				}
				name, _, _ := strings.Cut(val, " alias:")
				curSess.Initiator = strings.TrimSpace(name)
			case "Connection":
				if curSess == nil {
					return nil, bad("connection outside an I_T nexus")
				}
				id, err := strconv.ParseUint(val, 10, 32)
				if err != nil {
					return nil, bad("bad connection number")
				}
				curSess.Connections = append(curSess.Connections, connection{ID: uint32(id)})
			case "IP Address":
				if curSess != nil && len(curSess.Connections) > 0 {
					curSess.Connections[len(curSess.Connections)-1].Address = val
				}
			}
		case secLUN:
			if key == "LUN" {
				n, err := strconv.ParseUint(val, 10, 64)
				if err != nil {
					return nil, bad("bad LUN number")
				}
				t.LUNs = append(t.LUNs, lun{Num: n, SizeMB: -1})
				curLUN = &t.LUNs[len(t.LUNs)-1]
				continue
			}
			if curLUN == nil {
				return nil, bad("LUN attribute before the first LUN")
			}
			if !kv {
				continue
			}
			switch key {
			case "Type":
				curLUN.Type = val
			case "SCSI SN":
				curLUN.Serial = val
			case "Size":
				// "67 MB, Block size: 512"
				size, block, _ := strings.Cut(val, ",")
				if mb, ok := strings.CutSuffix(strings.TrimSpace(size), " MB"); ok {
					if n, err := strconv.ParseInt(mb, 10, 64); err == nil {
						curLUN.SizeMB = n
					}
				}
				if bs, ok := strings.CutPrefix(strings.TrimSpace(block), "Block size:"); ok {
					curLUN.BlockSize, _ = strconv.Atoi(strings.TrimSpace(bs))
				}
			case "Online":
				curLUN.Online = val == "Yes"
			case "Thin-provisioning":
				curLUN.Thin = val == "Yes"
			case "Backing store type":
				curLUN.BSType = val
			case "Backing store path":
				if val != "None" {
					curLUN.Path = val
				}
			}
		case secAccount:
			if user, ok := strings.CutSuffix(text, " (outgoing)"); ok {
				t.OutAccount = user
			} else {
				t.InAccounts = append(t.InAccounts, text)
			}
		case secACL:
			t.ACL = append(t.ACL, text)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tgtadm target show: %w", err)
	}
	return targets, nil
}

func indentOf(line string) int {
	n := 0
	for _, r := range line {
		switch r {
		case ' ':
			n++
		case '\t':
			n += headerIndent
		default:
			return n
		}
	}
	return n
}

// parsePortals parses "tgtadm --lld iscsi --mode portal --op show":
// lines "Portal: 127.0.0.1:3260,1" (address:port, target portal group).
func parsePortals(out string) ([]netip.AddrPort, error) {
	var portals []netip.AddrPort
	for i, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		rest, ok := strings.CutPrefix(line, "Portal:")
		if !ok {
			return nil, fmt.Errorf("tgtadm portal show, line %d %q: want \"Portal: ADDR:PORT,TPGT\"", i+1, line)
		}
		addr, _, _ := strings.Cut(strings.TrimSpace(rest), ",")
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, fmt.Errorf("tgtadm portal show, line %d %q: %w", i+1, line, err)
		}
		portals = append(portals, ap)
	}
	return portals, nil
}

// parseAccounts parses "tgtadm --lld iscsi --mode account --op show":
// "Account list:" and one indented user name a line (nothing at all when
// there are no accounts).
func parseAccounts(out string) ([]string, error) {
	var users []string
	for i, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, " \t\r")
		if line == "" {
			continue
		}
		if indentOf(line) == 0 {
			if line != "Account list:" {
				return nil, fmt.Errorf("tgtadm account show, line %d %q: want \"Account list:\"", i+1, line)
			}
			continue
		}
		users = append(users, strings.TrimLeft(line, " \t"))
	}
	return users, nil
}

// tgtMB is the size in "MB" that tgtd prints for a LUN of size bytes
// (print_disksize in usr/target.c: roughly bytes/10^6).
func tgtMB(size int64) int64 {
	sectors := size / 512
	return (sectors - (sectors/625 - 974)) / 1950
}

package tgt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// tgtd's management protocol, as tgtadm speaks it (tgt's usr/tgtadm.h,
// usr/tgtadm.c, usr/mgmt.c; unchanged since tgt 1.0.60, 2015): one request
// per connection to the unix socket /var/run/tgtd/socket.<control port>
// ($TGT_IPC_SOCKET.<port> when that is set, as for tgtadm). A request is a
// fixed header (struct tgtadm_req, in the host's byte order) and a
// NUL-terminated string of comma-separated parameters; the answer is a
// header (struct tgtadm_rsp: status, total length) and, for "show", the
// text tgtadm prints. tgtd only answers a peer of its own user (root).
//
// Speaking it directly saves a tgtadm process per call: about a
// millisecond each on a quiet machine, the most of what building a target
// costs.

// The request header's fields, in order (sizeof(struct tgtadm_req) is 120
// on every Linux ABI: its 64-bit fields fall on 8-byte offsets).
type ipcRequest struct {
	Mode       int32
	Op         int32
	LLD        [64]byte
	Len        uint32 // header and parameters
	TID        int32
	SID        uint64
	LUN        uint64
	CID        uint32
	HostNo     uint32
	DeviceType uint32
	AcDir      uint32
	Pack       uint32
	Force      uint32
}

// ipcResponse is struct tgtadm_rsp.
type ipcResponse struct {
	Err uint32
	Len uint32 // header and text
}

const (
	ipcRequestSize  = 120
	ipcResponseSize = 8
	// ipcMaxParams is tgtd's limit on a request's parameters
	// (MAX_MGT_BUFSIZE).
	ipcMaxParams = 8 * 1024
	// ipcMaxAnswer bounds what the driver reads back (a listing of
	// thousands of targets is a few MB).
	ipcMaxAnswer = 256 << 20
)

// enum tgtadm_mode and enum tgtadm_op, by tgtadm's names for them.
var (
	ipcModes = map[string]int32{"system": 0, "target": 1, "logicalunit": 2, "portal": 3, "lld": 4,
		"session": 5, "conn": 6, "account": 7}
	ipcOps = map[string]int32{"new": 0, "delete": 1, "show": 2, "bind": 3, "unbind": 4, "update": 5,
		"stat": 6, "start": 7, "stop": 8}
)

// ipcErrors are tgtd's status codes (enum tgtadm_errno) with the messages
// tgtadm prints for them, which the driver matches (said).
var ipcErrors = []string{
	"success", "unknown error", "out of memory", "can't find the driver", msgNoTarget, msgNoLUN,
	"can't find the session", "can't find the connection", "can't find the binding",
	"this target already exists", "this logical unit number already exists", "this binding already exists",
	"this access control rule already exists", msgNoACL, "this account already exists", msgNoAccount,
	"too many accounts", "invalid request", "this target already has an outgoing account",
	"this target is still active", msgLUNActive, "this driver is busy", "this operation isn't supported",
	"unknown parameter", "this device has Prevent Removal set",
}

// StatusError is a request tgtd refused, with its status code.
type StatusError struct{ Code uint32 }

func (e *StatusError) Error() string {
	if int(e.Code) < len(ipcErrors) {
		return ipcErrors[e.Code]
	}
	return "tgtd status " + strconv.FormatUint(uint64(e.Code), 10)
}

// encodeRequest turns tgtadm's options, as the driver passes them to run,
// into a request: the options tgtadm takes for the requests the driver
// makes. Anything else is an error (a mistake in this package).
func encodeRequest(args []string) ([]byte, error) {
	req := ipcRequest{Mode: -1, Op: -1, TID: -1, LUN: math.MaxUint64}
	var mode string
	var path, bstype, bsopts, targetname, address, iqn, user, password, params string
	for i := 0; i < len(args); i++ {
		name, val, inline := strings.Cut(args[i], "=")
		switch name {
		case "--force":
			req.Force = 1
			continue
		case "--outgoing":
			req.AcDir = 1
			continue
		}
		if !inline {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("option %s wants a value", name)
			}
			i++
			val = args[i]
		}
		var err error
		switch name {
		case "--lld":
			if len(val) >= len(req.LLD) {
				return nil, fmt.Errorf("--lld %q is too long", val)
			}
			copy(req.LLD[:], val)
		case "--mode":
			m, ok := ipcModes[val]
			if !ok {
				return nil, fmt.Errorf("unknown mode %q", val)
			}
			req.Mode, mode = m, val
		case "--op":
			o, ok := ipcOps[val]
			if !ok {
				return nil, fmt.Errorf("unknown op %q", val)
			}
			req.Op = o
		case "--tid":
			var n int64
			n, err = strconv.ParseInt(val, 10, 32)
			req.TID = int32(n)
		case "--sid":
			req.SID, err = strconv.ParseUint(val, 10, 64)
		case "--cid":
			var n uint64
			n, err = strconv.ParseUint(val, 10, 32)
			req.CID = uint32(n)
		case "--lun":
			req.LUN, err = strconv.ParseUint(val, 10, 64)
		case "--backing-store":
			path = val
		case "--bstype":
			bstype = val
		case "--bsopts":
			bsopts = val
		case "--targetname":
			targetname = val
		case "--initiator-address":
			address = val
		case "--initiator-name":
			iqn = val
		case "--user":
			user = val
		case "--password":
			password = val
		case "--params":
			params = val
		default:
			return nil, fmt.Errorf("option %s is not one the driver sends", name)
		}
		if err != nil {
			return nil, fmt.Errorf("option %s %q: %w", name, val, err)
		}
	}
	if req.Mode < 0 || req.Op < 0 {
		return nil, errors.New("a request needs --mode and --op")
	}
	// The parameters in tgtadm's order; "targetOps"/"portalOps" end with
	// a comma, as tgtadm writes them.
	var p []string
	for _, kv := range []struct{ k, v string }{{"path", path}, {"bstype", bstype}, {"bsopts", bsopts},
		{"targetname", targetname}, {"initiator-address", address}, {"initiator-name", iqn},
		{"user", user}, {"password", password}} {
		if kv.v != "" {
			p = append(p, kv.k+"="+kv.v)
		}
	}
	if params != "" {
		ops := "targetOps "
		if mode == "portal" {
			ops = "portalOps "
		}
		p = append(p, ops+params+",")
	}
	body := "" // tgtadm sends no parameters when it has none, else a C string
	if len(p) > 0 {
		body = strings.Join(p, ",") + "\x00"
	}
	if len(body) > ipcMaxParams {
		return nil, fmt.Errorf("the request's parameters take %d bytes; tgtd takes at most %d", len(body), ipcMaxParams)
	}
	req.Len = uint32(ipcRequestSize + len(body))
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, &req); err != nil {
		return nil, err
	}
	b.WriteString(body)
	return b.Bytes(), nil
}

// socketPath is the control socket of tgtd's control port, where tgtadm
// looks for it.
func socketPath(controlPort int) string {
	base := os.Getenv("TGT_IPC_SOCKET")
	if base == "" {
		base = SocketDir + "/socket"
	}
	return base + "." + strconv.Itoa(controlPort)
}

// call sends one request to tgtd and returns the text of its answer.
// Errors: a *StatusError when tgtd refused the request, else why tgtd
// could not be asked (no tgtd: the dial error).
func (a *tgtadm) call(ctx context.Context, args []string) (string, error) {
	req, err := encodeRequest(args)
	if err != nil {
		return "", err
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", socketPath(a.controlPort))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(req); err != nil {
		return "", fmt.Errorf("send the request to tgtd: %w", err)
	}
	var rsp ipcResponse
	if err := binary.Read(conn, binary.NativeEndian, &rsp); err != nil {
		return "", fmt.Errorf("read tgtd's answer: %w", err)
	}
	if rsp.Err != 0 {
		return "", &StatusError{Code: rsp.Err}
	}
	if rsp.Len < ipcResponseSize || rsp.Len-ipcResponseSize > ipcMaxAnswer {
		return "", fmt.Errorf("tgtd's answer says it is %d bytes long", rsp.Len)
	}
	text := make([]byte, rsp.Len-ipcResponseSize)
	if _, err := io.ReadFull(conn, text); err != nil {
		return "", fmt.Errorf("read tgtd's answer: %w", err)
	}
	if i := bytes.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	}
	return string(text), nil
}

package tgt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A FAKE tgtd control socket: it records each request (header and
// parameters) and answers with status and text.
type fakeSocket struct {
	base string // TGT_IPC_SOCKET
	got  chan []byte
}

func newFakeSocket(t *testing.T, port int, status uint32, text string) *fakeSocket {
	t.Helper()
	base := filepath.Join(t.TempDir(), "socket")
	l, err := net.Listen("unix", base+"."+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f := &fakeSocket{base: base, got: make(chan []byte, 1)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			hdr := make([]byte, ipcRequestSize)
			if _, err := io.ReadFull(c, hdr); err != nil {
				c.Close()
				continue
			}
			n := binary.NativeEndian.Uint32(hdr[72:76])
			body := make([]byte, int(n)-ipcRequestSize)
			if _, err := io.ReadFull(c, body); err != nil {
				c.Close()
				continue
			}
			f.got <- append(hdr, body...)
			answer := text + "\x00"
			if status != 0 {
				answer = ""
			}
			var rsp bytes.Buffer
			_ = binary.Write(&rsp, binary.NativeEndian, ipcResponse{Err: status, Len: uint32(ipcResponseSize + len(answer))})
			rsp.WriteString(answer)
			_, _ = c.Write(rsp.Bytes())
			c.Close()
		}
	}()
	return f
}

// TestRequestsAreTgtadms: every kind of request the driver makes is, byte
// for byte, the request Debian's tgtadm sends for the same options (both
// sent to a FAKE control socket, through TGT_IPC_SOCKET), and the driver
// reads the answer as tgtadm prints it.
func TestRequestsAreTgtadms(t *testing.T) {
	bare, err := exec.LookPath("tgtadm")
	if err != nil {
		t.Fatalf("this test compares the driver's requests with tgtadm's: %v; install Debian's tgt package (hack/install-deps.sh)", err)
	}
	for _, args := range [][]string{
		{"--lld", "iscsi", "--mode", "target", "--op", "show"},
		{"--lld", "iscsi", "--mode", "portal", "--op", "show"},
		{"--lld", "iscsi", "--mode", "account", "--op", "show"},
		{"--mode", "system", "--op", "show"},
		{"--lld", "iscsi", "--mode", "target", "--op", "new", "--tid", "7", "--targetname", "iqn.2026-11.io.sanboot:default.n-1"},
		{"--lld", "iscsi", "--mode", "logicalunit", "--op", "new", "--tid", "7", "--lun", "1", "--backing-store", "/srv/disks/n 1.raw", "--bstype", "rdwr"},
		{"--lld", "iscsi", "--mode", "logicalunit", "--op", "new", "--tid", "7", "--lun", "1", "--backing-store", "pool/img", "--bstype", "rbd", "--bsopts", "conf=/etc/ceph/ceph.conf;id=sanboot"},
		{"--lld", "iscsi", "--mode", "logicalunit", "--op", "update", "--tid", "7", "--lun", "1", "--params", "scsi_sn=0123abcd,thin_provisioning=1"},
		{"--lld", "iscsi", "--mode", "logicalunit", "--op", "delete", "--tid", "7", "--lun", "2"},
		{"--lld", "iscsi", "--mode", "target", "--op", "bind", "--tid", "7", "--initiator-name", "iqn.2026-11.io.sanboot:initiator.default.n-1"},
		{"--lld", "iscsi", "--mode", "target", "--op", "unbind", "--tid", "7", "--initiator-address", "ALL"},
		{"--lld", "iscsi", "--mode", "target", "--op", "unbind", "--tid", "7", "--initiator-name", "iqn.2026-11.io.sanboot:initiator.default.n-1"},
		{"--lld", "iscsi", "--mode", "account", "--op", "new", "--user", "u1", "--password=a-secret-of-16ch"},
		{"--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid", "7", "--user", "u1"},
		{"--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid", "7", "--user", "u2", "--outgoing"},
		{"--lld", "iscsi", "--mode", "account", "--op", "unbind", "--tid", "7", "--user", "u2", "--outgoing"},
		{"--lld", "iscsi", "--mode", "account", "--op", "delete", "--user", "u1"},
		{"--lld", "iscsi", "--mode", "conn", "--op", "delete", "--tid", "7", "--sid", "12", "--cid", "0"},
		{"--lld", "iscsi", "--mode", "target", "--op", "delete", "--force", "--tid", "7"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			const port = 4242
			const text = "Target 1: iqn.example:t\n    System information:\n"
			f := newFakeSocket(t, port, 0, text)
			t.Setenv("TGT_IPC_SOCKET", f.base)
			cmd := exec.Command(bare, append([]string{"-C", strconv.Itoa(port)}, args...)...)
			printed, err := cmd.Output()
			if err != nil {
				t.Fatalf("tgtadm %v: %v", args, err)
			}
			want := <-f.got
			a := &tgtadm{controlPort: port, timeout: 10 * time.Second}
			out, err := a.run(context.Background(), nil, args...)
			if err != nil {
				t.Fatalf("run %v: %v", args, err)
			}
			got := <-f.got
			if !bytes.Equal(got, want) {
				t.Errorf("request for %v:\n got  %q\n want %q (tgtadm's)", args, got, want)
			}
			if out != string(printed) {
				t.Errorf("answer read as %q; tgtadm printed %q", out, printed)
			}
		})
	}
}

// TestRefusalsSayWhatTgtadmSays: a request tgtd refuses is an *Error whose
// message is tgtadm's for that status, which the driver matches.
func TestRefusalsSayWhatTgtadmSays(t *testing.T) {
	const port = 4243
	for code, msg := range map[uint32]string{4: msgNoTarget, 5: msgNoLUN, 13: msgNoACL, 15: msgNoAccount, 20: msgLUNActive, 9: msgExists} {
		f := newFakeSocket(t, port+int(code), code, "")
		t.Setenv("TGT_IPC_SOCKET", f.base)
		a := &tgtadm{controlPort: port + int(code), timeout: 10 * time.Second}
		_, err := a.run(context.Background(), []string{"a-secret-of-16ch"}, "--lld", "iscsi", "--mode", "account", "--op", "new",
			"--user", "u1", "--password=a-secret-of-16ch")
		<-f.got
		var e *Error
		var refused *StatusError
		if !errors.As(err, &e) || !errors.As(err, &refused) || refused.Code != code || !said(err, msg) {
			t.Errorf("status %d: error %v; want an *Error with a *StatusError saying %q", code, err, msg)
		}
		if err != nil && strings.Contains(err.Error(), "a-secret-of-16ch") {
			t.Errorf("status %d: the error shows the secret: %v", code, err)
		}
	}
}

// TestNoSocketSaysNoTgtd: without a tgtd on the control port the error says
// so and names the socket.
func TestNoSocketSaysNoTgtd(t *testing.T) {
	t.Setenv("TGT_IPC_SOCKET", filepath.Join(t.TempDir(), "socket"))
	a := &tgtadm{controlPort: 4299, timeout: 10 * time.Second}
	_, err := a.run(context.Background(), nil, "--mode", "system", "--op", "show")
	if err == nil || !strings.Contains(err.Error(), "no tgtd answers on control port 4299") || !strings.Contains(err.Error(), "socket.4299") {
		t.Errorf("error without a tgtd = %v; want it to say no tgtd answers, and where", err)
	}
	if _, err := os.Stat(socketPath(4299)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socketPath(4299) = %s exists?", socketPath(4299))
	}
}

// TestBadRequestsAreRefusedBeforeSending: options the driver never sends
// are an error, not a request.
func TestBadRequestsAreRefusedBeforeSending(t *testing.T) {
	for _, args := range [][]string{
		{"--mode", "target"},
		{"--mode", "nonsense", "--op", "show"},
		{"--mode", "target", "--op", "show", "--bogus", "1"},
		{"--mode", "target", "--op", "new", "--tid"},
		{"--mode", "target", "--op", "new", "--tid", "seven"},
		{"--mode", "logicalunit", "--op", "new", "--backing-store", strings.Repeat("x", ipcMaxParams)},
	} {
		if _, err := encodeRequest(args); err == nil {
			t.Errorf("encodeRequest(%q) accepted it", args)
		}
	}
}

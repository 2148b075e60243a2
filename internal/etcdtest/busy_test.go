package etcdtest

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// A member whose port another process took in between is started again
// on other ports (Start), because etcd's error says the address is in use.
func TestBusyPortIsAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m := &Member{dir: t.TempDir(), t: t, Endpoints: []string{"http://" + l.Addr().String()}, peer: "http://" + FreeAddr(t)}
	e, err := m.startOnce()
	if err == nil {
		e.Close()
		t.Fatal("etcd started on a port in use")
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("etcd's error %v is not EADDRINUSE: Start would not try other ports", err)
	}
}

package etcdtest

import (
	"net"
	"strconv"
	"testing"
)

// FreeAddrs hands out distinct loopback ports below the kernel's
// ephemeral range (where no outgoing connection can take them), each
// free to bind.
func TestFreeAddrs(t *testing.T) {
	low := ephemeralLow()
	addrs := FreeAddrs(t, 50)
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("%s handed out twice in %v", a, addrs)
		}
		seen[a] = true
		host, port, err := net.SplitHostPort(a)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("%q is not a loopback host:port", a)
		}
		if p, _ := strconv.Atoi(port); low > firstPort+1000 && (p < firstPort || p >= low) {
			t.Errorf("port %d is not in [%d, %d): the ephemeral range starts at %d", p, firstPort, low, low)
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is not free: %v", a, err)
		}
		l.Close()
	}
}

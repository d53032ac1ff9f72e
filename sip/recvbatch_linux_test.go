package sip

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// Datagrams queued on a socket are read a batch a system call and come out
// one by one, in order, whole, with their sources, past the end of a batch;
// on a dual-stack socket an IPv4 sender reads as IPv4, as net's own
// ReadFromUDP reports it.
func TestRecvBatchReadsEachDatagramWithItsSource(t *testing.T) {
	for _, tt := range socketPairs {
		t.Run(tt.switchSide+" from "+tt.peer, func(t *testing.T) {
			server, client := listenUDP(t, tt.switchSide), listenUDP(t, tt.peer)
			want := client.LocalAddr().(*net.UDPAddr).AddrPort()
			to := netip.AddrPortFrom(want.Addr(), uint16(server.LocalAddr().(*net.UDPAddr).Port))
			const count = 2*recvBatchLen + 3
			for i := range count {
				if _, err := client.WriteToUDPAddrPort(fmt.Appendf(nil, "datagram %d %0*d", i, i*40, 0), to); err != nil {
					t.Fatal(err)
				}
			}
			in := newRecvBatch(server, 2048)
			for i := range count {
				data, src, err := in.read()
				if err != nil {
					t.Fatal(err)
				}
				if wantData := fmt.Sprintf("datagram %d %0*d", i, i*40, 0); string(data) != wantData {
					t.Fatalf("datagram %d: %q, want %q", i, data, wantData)
				}
				if src != want {
					t.Fatalf("datagram %d from %v, want %v", i, src, want)
				}
				if i == 0 && in.n != recvBatchLen {
					t.Fatalf("the first read took %d datagrams of the %d queued, want a batch of %d", in.n, count, recvBatchLen)
				}
			}
		})
	}
}

// socketPairs are the switch's socket and a peer's for the batch tests: one
// family each, and an IPv4 peer of a dual-stack socket.
var socketPairs = []struct{ switchSide, peer string }{
	{"127.0.0.1:0", "127.0.0.1:0"},
	{"[::1]:0", "[::1]:0"},
	{"[::]:0", "127.0.0.1:0"},
}

// listenUDP opens a UDP socket on addr, closed with the test; the test is
// skipped where the host has no such address (no IPv6).
func listenUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", a)
	if err != nil {
		t.Skipf("no such socket here: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

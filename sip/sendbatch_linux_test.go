package sip

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// Answers queued faster than they leave go out whole and in order, more
// than a batch of them, in the socket's family: an IPv4 phone is reached
// from a dual-stack socket too.
func TestSendBatchDeliversEveryDatagram(t *testing.T) {
	for _, tt := range socketPairs {
		t.Run(tt.switchSide+" to "+tt.peer, func(t *testing.T) {
			sender, phone := listenUDP(t, tt.switchSide), listenUDP(t, tt.peer)
			failures := make(chan error, 100)
			out := newSendBatch(sender, func(_ netip.AddrPort, err error) { failures <- err })
			defer out.close()
			dst := phone.LocalAddr().(*net.UDPAddr).AddrPort()
			const count = 3*sendBatchLen + 5
			for i := range count {
				out.send(fmt.Appendf(nil, "answer %d %0*d", i, i*30, 0), dst)
			}
			buf := make([]byte, 4096)
			phone.SetReadDeadline(time.Now().Add(5 * time.Second))
			for i := range count {
				n, _, err := phone.ReadFromUDP(buf)
				if err != nil {
					t.Fatalf("answer %d of %d: %v (send failures: %d)", i, count, err, len(failures))
				}
				if want := fmt.Sprintf("answer %d %0*d", i, i*30, 0); string(buf[:n]) != want {
					t.Fatalf("answer %d: %q, want %q", i, buf[:n], want)
				}
			}
		})
	}
}

// A destination the socket cannot reach, or that the kernel refuses, is
// reported, and the datagrams after it in the batch still leave.
func TestSendBatchReportsWhatItCannotSend(t *testing.T) {
	sender, phone := listenUDP(t, "127.0.0.1:0"), listenUDP(t, "127.0.0.1:0")
	failures := make(chan netip.AddrPort, 10)
	out := newSendBatch(sender, func(dst netip.AddrPort, _ error) { failures <- dst })
	defer out.close()
	v6 := netip.MustParseAddrPort("[2001:db8::1]:5060") // not reachable from an IPv4 socket
	portZero := netip.MustParseAddrPort("127.0.0.1:0")  // the kernel refuses it (EINVAL)
	out.send([]byte("lost"), v6)
	out.send([]byte("refused"), portZero)
	out.send([]byte("delivered"), phone.LocalAddr().(*net.UDPAddr).AddrPort())
	buf := make([]byte, 64)
	phone.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := phone.ReadFromUDP(buf); err != nil || string(buf[:n]) != "delivered" {
		t.Fatalf("the answer after the unreachable one: %q, %v", buf[:n], err)
	}
	for _, want := range []netip.AddrPort{v6, portZero} {
		select {
		case dst := <-failures:
			if dst != want {
				t.Fatalf("reported %v, want %v", dst, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%v was not reported", want)
		}
	}
}

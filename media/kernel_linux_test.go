package media

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// kernelRelay is a relay that must forward in the kernel.
func kernelRelay(t *testing.T) *Relay {
	t.Helper()
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = 42000, 42999
	cfg.Kernel = KernelOn
	return newTestRelay(t, cfg)
}

// userspacePackets is what the loops relayed on the call's sockets.
func userspacePackets(r *Relay, id string) (n uint64) {
	r.mu.Lock()
	c := r.calls[id]
	r.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.socks {
		n += s.packets.Load()
	}
	return n
}

// latchBoth sends one packet each way so both sides latch.
func latchBoth(t *testing.T, a, b *phone, ra, rb netip.AddrPort) {
	t.Helper()
	a.send(ra, rtpPacket(1, 160, 0xa, 0, []byte("a1")))
	b.mustRecv()
	b.send(rb, rtpPacket(1, 160, 0xb, 0, []byte("b1")))
	a.mustRecv()
}

func TestKernelForwards(t *testing.T) {
	r := kernelRelay(t)
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, rb := plainCall(t, r, "k1", a, b, "a=rtcp-mux")
	latchBoth(t, a, b, ra, rb)
	a.send(ra, rtpPacket(2, 320, 0xa, 0, []byte("a2"))) // offloads a→b now that b latched
	b.mustRecv()
	user := userspacePackets(r, "k1")
	if r.kern.offloaded.Load() != 2 {
		t.Fatalf("%d streams offloaded, want 2", r.kern.offloaded.Load())
	}
	for i := range 20 {
		pkt := rtpPacket(uint16(3+i), uint32(480+160*i), 0xa, 0, []byte("kernel"))
		a.send(ra, pkt)
		got, from := b.recv(2 * time.Second)
		if !bytes.Equal(got, pkt) || from != rb {
			t.Fatalf("b got %x from %s, want %x from %s", got, from, pkt, rb)
		}
	}
	if n := userspacePackets(r, "k1"); n != user {
		t.Errorf("userspace relayed %d more packets", n-user)
	}
	if n := r.kern.packets(); n != 20 {
		t.Errorf("kernel forwarded %d packets, want 20", n)
	}
	q, _ := r.Release("k1")
	if q.A.Packets != 22 || q.A.Lost != 0 {
		t.Errorf("leg a: %+v", q.A)
	}
	if r.kern.offloaded.Load() != 0 || r.kern.packets() != 20 {
		t.Errorf("after release: %d offloaded, %d packets", r.kern.offloaded.Load(), r.kern.packets())
	}
}

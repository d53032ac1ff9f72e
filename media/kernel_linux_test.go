package media

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
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

// waitOffloaded waits for the loop to offload n streams (it does so as it
// relays the packet that made them eligible).
func waitOffloaded(t *testing.T, r *Relay, n int64) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); r.kern.offloaded.Load() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams offloaded, want %d", r.kern.offloaded.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// latchBoth sends one packet each way so both sides latch.
func latchBoth(t *testing.T, a, b *phone, ra, rb netip.AddrPort) {
	t.Helper()
	latchFrom(t, a, b, ra, rb, 1)
}

func latchFrom(t *testing.T, a, b *phone, ra, rb netip.AddrPort, seq uint16) {
	t.Helper()
	a.send(ra, rtpPacket(seq, 160, 0xa, 0, []byte("a1")))
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
	waitOffloaded(t, r, 2)
	user := userspacePackets(r, "k1")
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

// offloadedCall connects a and b with rtcp-mux and gets both directions
// into the kernel; a's stream carries SSRC 0xa from sequence 1.
func offloadedCall(t *testing.T, r *Relay, id string, a, b *phone) (ra, rb netip.AddrPort) {
	t.Helper()
	return offloadedFrom(t, r, id, a, b, 1)
}

// offloadedFrom is offloadedCall with a's sequence numbers from seq.
func offloadedFrom(t *testing.T, r *Relay, id string, a, b *phone, seq uint16) (ra, rb netip.AddrPort) {
	t.Helper()
	ra, rb = plainCall(t, r, id, a, b, "a=rtcp-mux")
	latchFrom(t, a, b, ra, rb, seq)
	a.send(ra, rtpPacket(seq+1, 320, 0xa, 0, []byte("a2")))
	b.mustRecv()
	waitOffloaded(t, r, 2)
	return ra, rb
}

func TestKernelLossAndJitter(t *testing.T) {
	r := kernelRelay(t)
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, _ := offloadedFrom(t, r, "q", a, b, 65500)
	// Sequence numbers wrapping, every 20 ms; the timestamp alternately
	// stands still and jumps 40 ms, so each transit differs by 20 ms from
	// the last: the jitter tends to 20 ms.
	sent, ts := 2, uint32(320)
	for i := range 60 {
		seq := uint16(65502 + i) // wraps at i=34
		if i%2 == 1 {
			ts += 320
		}
		if i == 10 || i == 40 || i == 41 {
			continue // 3 lost
		}
		a.send(ra, rtpPacket(seq, ts, 0xa, 0, make([]byte, 160)))
		b.mustRecv()
		sent++
		time.Sleep(20 * time.Millisecond)
	}
	if r.kern.packets() < 50 {
		t.Errorf("kernel forwarded %d packets", r.kern.packets())
	}
	q, _ := r.Release("q")
	if q.A.Packets != uint64(sent) || q.A.Lost != 3 {
		t.Errorf("packets %d lost %d, want %d and 3", q.A.Packets, q.A.Lost, sent)
	}
	if q.A.Jitter < 12*time.Millisecond || q.A.Jitter > 30*time.Millisecond {
		t.Errorf("jitter %v, want about 18 ms", q.A.Jitter)
	}
}

func TestKernelPassesDTMFUp(t *testing.T) {
	r := kernelRelay(t)
	got := make(chan rune, 10)
	r.OnDTMF(func(id, leg string, d rune, dur time.Duration) { got <- d })
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, _ := offloadedCall(t, r, "dtmf", a, b)
	user := userspacePackets(r, "dtmf")
	for i := range 4 { // '5', the last three with the end bit
		flags := byte(10)
		if i > 0 {
			flags |= 0x80
		}
		pkt := rtpPacket(uint16(3+i), 480, 0xa, 101, []byte{5, flags, 0, 160})
		a.send(ra, pkt)
		if got := b.mustRecv(); !bytes.Equal(got, pkt) {
			t.Fatalf("b got %x", got)
		}
	}
	// Audio again: userspace relays the first packet and hands the stream
	// back to the kernel, which forwards the next.
	a.send(ra, rtpPacket(7, 640, 0xa, 0, nil))
	b.mustRecv()
	a.send(ra, rtpPacket(8, 800, 0xa, 0, nil))
	b.mustRecv()
	select {
	case d := <-got:
		if d != '5' {
			t.Fatalf("digit %q", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no digit")
	}
	if n := userspacePackets(r, "dtmf") - user; n != 5 {
		t.Errorf("userspace relayed %d packets, want the 4 events and the first audio after them", n)
	}
	if n := r.kern.offloaded.Load(); n != 2 {
		t.Errorf("%d streams offloaded after the events, want 2", n)
	}
	q, _ := r.Release("dtmf")
	if q.A.Packets != 8 || q.A.Lost != 0 {
		t.Errorf("leg a: packets %d lost %d, want 8 and 0", q.A.Packets, q.A.Lost)
	}
}

func TestKernelTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = 42000, 42999
	cfg.Kernel = KernelOn
	cfg.Timeout = 300 * time.Millisecond
	r := newTestRelay(t, cfg)
	fired := make(chan string, 1)
	r.OnTimeout(func(id string, q Quality) { fired <- id })
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, _ := offloadedCall(t, r, "idle", a, b)
	// Media forwarded in the kernel keeps the call alive.
	for i := range 12 {
		a.send(ra, rtpPacket(uint16(3+i), uint32(480+160*i), 0xa, 0, nil))
		b.mustRecv()
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case id := <-fired:
		t.Fatalf("%s timed out with media flowing in the kernel", id)
	default:
	}
	select {
	case <-fired:
	case <-time.After(2 * time.Second):
		t.Fatal("no timeout")
	}
	if n := r.kern.offloaded.Load(); n != 0 {
		t.Errorf("%d streams still offloaded", n)
	}
	if it := r.kern.streams.Iterate(); it.Next(new([8]byte), new(kvalue)) {
		t.Error("map entry left after timeout")
	}
}

func TestKernelReinviteTakesStreamBack(t *testing.T) {
	r := kernelRelay(t)
	a, b, b2 := newPhone(t, lo4), newPhone(t, lo4), newPhone(t, lo4)
	ra, _ := offloadedCall(t, r, "re", a, b)
	// b moves: its re-INVITE gives a new address.
	if _, err := r.Offer("re", "tag-b", audioSDP(lo4, int(b2.addr().Port()), "RTP/AVP", "a=rtcp-mux"), LegOptions{Source: lo4}); err != nil {
		t.Fatal(err)
	}
	if n := r.kern.offloaded.Load(); n != 0 {
		t.Fatalf("%d streams offloaded after re-INVITE", n)
	}
	pkt := rtpPacket(3, 480, 0xa, 0, []byte("to the new address"))
	a.send(ra, pkt)
	if got := b2.mustRecv(); !bytes.Equal(got, pkt) {
		t.Fatalf("b2 got %x", got)
	}
	b.expectNothing(100 * time.Millisecond)
}

func TestKernelOff(t *testing.T) {
	cfg := testConfig()
	cfg.Kernel = KernelOff
	r := newTestRelay(t, cfg)
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, rb := plainCall(t, r, "u", a, b, "a=rtcp-mux")
	latchBoth(t, a, b, ra, rb)
	for i := range 5 {
		a.send(ra, rtpPacket(uint16(2+i), uint32(320+160*i), 0xa, 0, nil))
		b.mustRecv()
	}
	if r.kern != nil {
		t.Fatal("kernel forwarding on")
	}
	if n := userspacePackets(r, "u"); n != 7 {
		t.Errorf("userspace relayed %d packets, want 7", n)
	}
}

// netnsPhone is a phone in its own network namespace, reached from the
// host through a veth pair: host side hostIP/24, phone side phoneIP/24.
func netnsPhone(t *testing.T, name string, hostIP, phoneIP netip.Addr) *phone {
	t.Helper()
	ns := fmt.Sprintf("kf%d%s", os.Getpid()%100000, name)
	host, peer := ns+"h", ns+"p"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Skipf("ip %s: %v: %s", strings.Join(args, " "), err, out) // no root, no ip(8)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() }) // deletes the veth pair too
	run("link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
	run("addr", "add", hostIP.String()+"/24", "dev", host)
	run("link", "set", host, "up")
	run("-n", ns, "addr", "add", phoneIP.String()+"/24", "dev", peer)
	run("-n", ns, "link", "set", peer, "up")
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "route", "add", "default", "via", hostIP.String())

	// A socket keeps the namespace it was made in: make it on a thread
	// moved there for the purpose.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	const setns = 308 // SYS_SETNS on amd64
	if _, _, e := syscall.RawSyscall(setns, target.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
		t.Fatal(e)
	}
	p := newPhone(t, phoneIP)
	if _, _, e := syscall.RawSyscall(setns, self.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
		panic(e) // this thread cannot be returned to the runtime
	}
	return p
}

// Media between two remote phones, each behind its own interface: the
// kernel routes it out of the other interface (bpf_fib_lookup,
// bpf_redirect_neigh) with the TTL one lower.
func TestKernelForwardsToRemotePeers(t *testing.T) {
	a := netnsPhone(t, "a", netip.MustParseAddr("10.199.1.1"), netip.MustParseAddr("10.199.1.2"))
	b := netnsPhone(t, "b", netip.MustParseAddr("10.199.2.1"), netip.MustParseAddr("10.199.2.2"))
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = 43000, 43999
	cfg.BindIPv4 = netip.MustParseAddr("10.199.1.1")
	cfg.Kernel = KernelOn
	r := newTestRelay(t, cfg)
	id := "remote"
	toA, toB := connect(t, r, id, audioSDP(a.addr().Addr(), int(a.addr().Port()), "RTP/AVP", "a=rtcp-mux"), LegOptions{Source: a.addr().Addr()},
		func([]byte) []byte { return audioSDP(b.addr().Addr(), int(b.addr().Port()), "RTP/AVP", "a=rtcp-mux") })
	ra, rb := relayAddr(t, toA, 0), relayAddr(t, toB, 0)
	latchBoth(t, a, b, ra, rb)
	a.send(ra, rtpPacket(2, 320, 0xa, 0, []byte("a2")))
	b.mustRecv()
	waitOffloaded(t, r, 2)
	user := userspacePackets(r, id)
	for i := range 10 {
		pkt := rtpPacket(uint16(3+i), uint32(480+160*i), 0xa, 0, []byte("routed"))
		a.send(ra, pkt)
		got, ttl, tos := recvTTLTOS(t, b)
		if !bytes.Equal(got, pkt) || ttl != 63 || tos != dscpEF {
			t.Fatalf("b got %x with TTL %d, TOS %#x; want %x with TTL 63 (one hop), TOS %#x", got, ttl, tos, pkt, dscpEF)
		}
		back := rtpPacket(uint16(2+i), uint32(320+160*i), 0xb, 0, []byte("back"))
		b.send(rb, back)
		if got, from := a.recv(2 * time.Second); !bytes.Equal(got, back) || from != ra {
			t.Fatalf("a got %x from %s, want %x from %s", got, from, back, ra)
		}
	}
	if n := userspacePackets(r, id) - user; n != 0 {
		t.Errorf("userspace relayed %d packets", n)
	}
	if n := r.kern.packets(); n != 20 {
		t.Errorf("kernel forwarded %d packets, want 20", n)
	}
}

// recvTTLTOS reads one datagram on p with the TTL and TOS it arrived with.
func recvTTLTOS(t *testing.T, p *phone) (b []byte, ttl, tos int) {
	t.Helper()
	raw, err := p.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVTTL, 1)
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVTOS, 1)
	})
	buf, oob := make([]byte, 2048), make([]byte, 128)
	p.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, oobn, _, _, err := p.conn.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_TTL && len(m.Data) >= 4:
			ttl = int(m.Data[0]) // an int in host order: little-endian here
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_TOS && len(m.Data) >= 1:
			tos = int(m.Data[0])
		}
	}
	return buf[:n], ttl, tos
}

// The same stream, with a wrap, losses, a late packet, a duplicate,
// telephone-events and a restart (sequence jump), gives the same counts
// through the kernel as through the loops.
func TestKernelCountsLikeUserspace(t *testing.T) {
	seqs := []uint16{3, 4, 6, 5, 5, 7, 9, 20000, 20001, 20002, 20004, 20005}
	run := func(mode KernelMode) Quality {
		cfg := testConfig()
		cfg.PortMin, cfg.PortMax, cfg.Kernel = 42000, 42999, mode
		r := newTestRelay(t, cfg)
		a, b := newPhone(t, lo4), newPhone(t, lo4)
		ra, rb := plainCall(t, r, "same", a, b, "a=rtcp-mux")
		latchBoth(t, a, b, ra, rb)
		a.send(ra, rtpPacket(2, 320, 0xa, 0, nil))
		b.mustRecv()
		for i, seq := range seqs {
			pt := uint8(0)
			if i == 6 {
				pt = 101 // an event in the middle
			}
			a.send(ra, rtpPacket(seq, uint32(seq)*160, 0xa, pt, []byte{1, 0x80, 0, 160}))
			b.mustRecv()
		}
		if mode == KernelOn && r.kern.packets() == 0 {
			t.Error("nothing went through the kernel")
		}
		q, _ := r.Release("same")
		return q
	}
	k, u := run(KernelOn), run(KernelOff)
	if k.A.Packets != u.A.Packets || k.A.Lost != u.A.Lost || k.A.LossRatio != u.A.LossRatio {
		t.Errorf("kernel: packets %d lost %d (%v); userspace: packets %d lost %d (%v)",
			k.A.Packets, k.A.Lost, k.A.LossRatio, u.A.Packets, u.A.Lost, u.A.LossRatio)
	}
}

// Packets that entered the socket before the kernel's entry and reach the
// loop after it, an event among them, are each counted once.
func TestKernelCountsPacketsQueuedBeforeTheOffload(t *testing.T) {
	r := kernelRelay(t)
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, rb := plainCall(t, r, "queued", a, b, "a=rtcp-mux")
	latchBoth(t, a, b, ra, rb)
	for _, lp := range r.loops { // the loops wait: the packets queue
		lp.mu.Lock()
	}
	a.send(ra, rtpPacket(2, 320, 0xa, 0, nil)) // relayed, then offloaded
	a.send(ra, rtpPacket(3, 480, 0xa, 101, []byte{5, 10, 0, 160}))
	a.send(ra, rtpPacket(4, 480, 0xa, 101, []byte{5, 0x80 | 10, 0, 160}))
	a.send(ra, rtpPacket(5, 800, 0xa, 0, nil))
	time.Sleep(50 * time.Millisecond)
	for _, lp := range r.loops {
		lp.mu.Unlock()
	}
	for range 4 {
		b.mustRecv()
	}
	waitOffloaded(t, r, 2) // b's latched direction too
	kernel := r.kern.packets()
	a.send(ra, rtpPacket(7, 1120, 0xa, 0, nil)) // 6 lost
	b.mustRecv()
	if r.kern.packets() != kernel+1 {
		t.Error("the audio after the queued packets did not go through the kernel")
	}
	q, _ := r.Release("queued")
	if q.A.Packets != 6 || q.A.Lost != 1 {
		t.Errorf("leg a: packets %d lost %d, want 6 and 1", q.A.Packets, q.A.Lost)
	}
}

// A foreign source is not forwarded by the kernel: it goes up to the loop,
// whose latching rule drops it, and the stream stays in the kernel.
func TestKernelLeavesForeignSourcesToTheLoop(t *testing.T) {
	r := kernelRelay(t)
	a, b, x := newPhone(t, lo4), newPhone(t, lo4), newPhone(t, lo4)
	ra, _ := offloadedCall(t, r, "hijack", a, b)
	x.send(ra, rtpPacket(3, 480, 0xa, 0, []byte("same SSRC, other port"))) // same IP, same SSRC: not a re-latch
	b.expectNothing(200 * time.Millisecond)
	if n := r.kern.offloaded.Load(); n != 2 {
		t.Errorf("%d streams offloaded after a foreign packet, want 2", n)
	}
	pkt := rtpPacket(4, 640, 0xa, 0, []byte("still a"))
	a.send(ra, pkt)
	if got := b.mustRecv(); !bytes.Equal(got, pkt) {
		t.Fatalf("b got %x", got)
	}
	if n := r.kern.packets(); n != 1 {
		t.Errorf("kernel forwarded %d packets, want 1", n)
	}
}

package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// In-kernel forwarding: a TCX ingress program forwards a latched plain-RTP
// direction in softirq, as rtpengine's xt_RTPENGINE does, so the packet
// never reaches the relay process. The map is keyed by the receiving relay
// socket's local address; the value holds the latched source and SSRC the
// packet must come from, the rewrite to the other leg, and the RFC 3550
// receiver state (A.1 sequence, A.8 jitter) so that quality, metrics and
// the media timeout read the same whichever path carried the packets.
//
// Anything else passes up unchanged to the userspace loop: other sources
// (latching and hijack rules stay there), another SSRC, a sequence jump,
// RTCP, and payload types outside the offloaded set (telephone-event,
// which userspace decodes). Such a packet of the offloaded source takes the
// stream back to userspace (kernelTakeBack) until audio flows again.
//
// A local destination (loopback) continues to local delivery; a remote
// one leaves by bpf_redirect_neigh on the device userspace found the route
// takes (the kernel resolves the next hop), its TTL one lower. IPv6 and
// SRTP legs stay in userspace.
//
// Packet and byte counters are atomic adds; the sequence and jitter state
// is not locked: a stream's packets reach the program one at a time as
// long as they arrive on one CPU (RSS hashes a flow to one queue; on
// loopback, the sender's CPU), and a rare interleaving costs one sample.
//
// The program is attached to every Ethernet or loopback interface that is
// up, since media for the relay's address may arrive on any of them; it
// leaves other packets after a few loads (UDP to the relay's port range).

// kvalue mirrors the map value the program reads and updates; addresses,
// ports and the SSRC are in network byte order, the rest host order.
type kvalue struct {
	SrcIP      [4]byte   // 0: latched peer
	SrcPort    [2]byte   // 4
	Pad0       uint16    // 6
	NewSrcIP   [4]byte   // 8: the other leg's relay socket, 0 = the packet's destination
	NewSrcPort [2]byte   // 12
	NewDstPort [2]byte   // 14
	NewDstIP   [4]byte   // 16: the other leg's latched peer
	SSRC       [4]byte   // 20
	Clock      uint32    // 24: RTP clock of the offloaded payload types
	OutIf      uint32    // 28: device toward a remote destination, 0 local
	PTs        [2]uint64 // 32: bitmap of offloaded payload types
	Packets    uint64    // 48: forwarded by the kernel
	Bytes      uint64    // 56: their UDP payload
	LastNs     uint64    // 64: ktime of the last packet counted
	MaxSeq     uint32    // 72: RFC 3550 A.1 max_seq
	Cycles     uint32    // 76
	Received   uint64    // 80
	LastArr    uint64    // 88: ktime of the last jitter sample, 0 none
	LastTS     uint32    // 96
	Jitter     uint32    // 100: A.8 jitter ×16, timestamp units
}

const kvalueSize = 104

// kernel is the relay's in-kernel forwarding: one program and map per
// relay, attached to every Ethernet and loopback interface up at start.
type kernel struct {
	streams *ebpf.Map
	prog    *ebpf.Program
	links   []link.Link
	mono    int64 // CLOCK_MONOTONIC at the relay's epoch: ktime = now() + mono
	local   map[netip.Addr]bool

	offloaded atomic.Int64  // streams in the map
	retired   atomic.Uint64 // kernel-forwarded packets of deleted entries
}

// kstream is an offloaded socket's entry.
type kstream struct {
	key  [8]byte
	src  netip.AddrPort
	ssrc uint32
	pts  [2]uint64
}

// sockOS is what a socket needs beyond its fd on Linux: its kernel entry,
// touched only under its loop's mutex.
type sockOS struct {
	kern   atomic.Pointer[kstream] // written by the loop, read by scrapes and the sweeper
	noKern bool                    // the offload failed or cannot work: stay in userspace until renegotiated
}

func newKernel(r *Relay) (*kernel, error) {
	cfg := r.cfg
	spec := &ebpf.MapSpec{
		Name: "centralino_kfwd", Type: ebpf.Hash,
		KeySize: 8, ValueSize: kvalueSize, MaxEntries: uint32(cfg.PortMax - cfg.PortMin + 1),
	}
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("BPF map: %w", err)
	}
	k := &kernel{streams: m, local: map[netip.Addr]bool{}}
	k.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "centralino_kfwd", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: program(m.FD(), cfg.PortMin, cfg.PortMax, cfg.BindIPv4.IsUnspecified()),
	})
	if err != nil {
		k.close()
		return nil, fmt.Errorf("BPF program: %w", err)
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		k.close()
		return nil, err
	}
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok {
				ip, _ := netip.AddrFromSlice(p.IP)
				k.local[ip.Unmap()] = true
			}
		}
		// The program reads an Ethernet header: no L3 devices (tun, wireguard).
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback == 0 && len(ifc.HardwareAddr) != 6 {
			continue
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: k.prog, Attach: ebpf.AttachTCXIngress})
		if errors.Is(err, syscall.ENODEV) {
			continue // gone since listed
		}
		if err != nil {
			k.close()
			return nil, fmt.Errorf("attach to %s: %w", ifc.Name, err)
		}
		k.links = append(k.links, l)
	}
	if !cfg.BindIPv4.IsUnspecified() && !k.local[cfg.BindIPv4] {
		k.close()
		return nil, fmt.Errorf("no interface holds %s", cfg.BindIPv4)
	}
	var ts syscall.Timespec
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		k.close()
		return nil, e
	}
	k.mono = ts.Nano() - r.now()
	return k, nil
}

func (k *kernel) close() {
	for _, l := range k.links {
		l.Close()
	}
	if k.prog != nil {
		k.prog.Close()
	}
	k.streams.Close()
}

// packets is the kernel-forwarded packet count, live entries included.
func (k *kernel) packets() uint64 {
	n := k.retired.Load()
	var key [8]byte
	var v kvalue
	it := k.streams.Iterate()
	for it.Next(&key, &v) {
		n += v.Packets
	}
	return n
}

// Program layout: offsets from the Ethernet header (loopback has one too),
// IPv4 without options.
const (
	offIP      = 14
	offTTL     = offIP + 8
	offProto   = offIP + 9
	offIPCsum  = offIP + 10
	offSrcIP   = offIP + 12
	offDstIP   = offIP + 16
	offSrcPort = offIP + 20
	offDstPort = offIP + 22
	offUDPLen  = offIP + 24
	offUDPCsum = offIP + 26
	offRTP     = offIP + 28
)

// program returns the TC ingress program for the relay's map. TCX return
// codes: 0 (pass) stops the chain, -1 lets the next program (another relay
// in the process, a test's) see the packet.
func program(mapFD, portMin, portMax int, wildcard bool) asm.Instructions {
	const (
		ctxData    = 76 // struct __sk_buff
		ctxDataEnd = 80
	)
	R0, R1, R2, R3, R4, R5 := asm.R0, asm.R1, asm.R2, asm.R3, asm.R4, asm.R5
	ctx, val, pkt, pt := asm.R6, asm.R7, asm.R8, asm.R9
	seq, now := asm.R6, asm.R9 // ctx and pt, once no longer needed
	xadd := func(off int16, src asm.Register) asm.Instruction {
		return asm.AddAtomic.Mem(val, src, asm.DWord, off)
	}
	in := asm.Instructions{
		asm.Mov.Reg(ctx, R1),
		asm.LoadMem(pkt, ctx, ctxData, asm.Word),
		asm.LoadMem(R3, ctx, ctxDataEnd, asm.Word),
		asm.Mov.Reg(R2, pkt),
		asm.Add.Imm(R2, offRTP+12),
		asm.JGT.Reg(R2, R3, "next"),
		asm.LoadMem(R2, pkt, 12, asm.Half),
		asm.JNE.Imm(R2, 0x0008, "next"), // ETH_P_IP as read on a little-endian host
		asm.LoadMem(R2, pkt, offIP, asm.Byte),
		asm.JNE.Imm(R2, 0x45, "next"),
		asm.LoadMem(R2, pkt, offProto, asm.Byte),
		asm.JNE.Imm(R2, syscall.IPPROTO_UDP, "next"),
		asm.LoadMem(R2, pkt, offIP+6, asm.Half),
		asm.And.Imm(R2, 0xff3f), // MF and fragment offset
		asm.JNE.Imm(R2, 0, "next"),
		asm.LoadMem(R2, pkt, offTTL, asm.Byte),
		asm.JLE.Imm(R2, 1, "next"),
		asm.LoadMem(R2, pkt, offDstPort, asm.Byte),
		asm.LSh.Imm(R2, 8),
		asm.LoadMem(R3, pkt, offDstPort+1, asm.Byte),
		asm.Or.Reg(R2, R3),
		asm.JLT.Imm(R2, int32(portMin), "next"),
		asm.JGT.Imm(R2, int32(portMax), "next"),
		// RTP version 2 and not RTCP: RFC 5761 keeps RTP off PT 64–95.
		asm.LoadMem(R2, pkt, offRTP, asm.Byte),
		asm.And.Imm(R2, 0xc0),
		asm.JNE.Imm(R2, 0x80, "next"),
		asm.LoadMem(pt, pkt, offRTP+1, asm.Byte),
		asm.And.Imm(pt, 0x7f),
		asm.Mov.Reg(R2, pt),
		asm.Sub.Imm(R2, 64),
		asm.JLT.Imm(R2, 32, "next"),
		// Key: local IP (0 for a wildcard bind) and port.
		asm.Mov.Imm(R2, 0),
		asm.StoreMem(asm.RFP, -8, R2, asm.DWord),
	}
	if !wildcard {
		in = append(in,
			asm.LoadMem(R2, pkt, offDstIP, asm.Word),
			asm.StoreMem(asm.RFP, -8, R2, asm.Word))
	}
	in = append(in,
		asm.LoadMem(R2, pkt, offDstPort, asm.Half),
		asm.StoreMem(asm.RFP, -4, R2, asm.Half),
		asm.LoadMapPtr(R1, mapFD),
		asm.Mov.Reg(R2, asm.RFP),
		asm.Add.Imm(R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(R0, 0, "next"),
		asm.Mov.Reg(val, R0),
		// The latched source and its SSRC only.
		asm.LoadMem(R2, pkt, offSrcIP, asm.Word),
		asm.LoadMem(R3, val, 0, asm.Word),
		asm.JNE.Reg(R2, R3, "next"),
		asm.LoadMem(R2, pkt, offSrcPort, asm.Half),
		asm.LoadMem(R3, val, 4, asm.Half),
		asm.JNE.Reg(R2, R3, "next"),
		asm.LoadMem(R2, pkt, offRTP+8, asm.Word),
		asm.LoadMem(R3, val, 20, asm.Word),
		asm.JNE.Reg(R2, R3, "next"),
		// An offloaded payload type only: the rest goes up uncounted.
		asm.Mov.Reg(R2, pt),
		asm.RSh.Imm(R2, 6),
		asm.LSh.Imm(R2, 3),
		asm.Mov.Reg(R3, val),
		asm.Add.Reg(R3, R2),
		asm.LoadMem(R3, R3, 32, asm.DWord),
		asm.Mov.Reg(R2, pt),
		asm.And.Imm(R2, 63),
		asm.RSh.Reg(R3, R2),
		asm.And.Imm(R3, 1),
		asm.JEq.Imm(R3, 0, "next"),
		asm.LoadMem(seq, pkt, offRTP+2, asm.Byte),
		asm.LSh.Imm(seq, 8),
		asm.LoadMem(R2, pkt, offRTP+3, asm.Byte),
		asm.Or.Reg(seq, R2),
		asm.LoadMem(R2, val, 72, asm.Word),
		asm.Mov.Reg(R3, seq),
		asm.Sub.Reg(R3, R2),
		asm.And.Imm(R3, 0xffff),
		asm.JLT.Imm(R3, maxDropout, "inorder"),
		asm.JGT.Imm(R3, seqMod-maxMisorder, "count"),
		asm.Ja.Label("next"),
		asm.JGE.Reg(seq, R2, "setmax").WithSymbol("inorder"),
		asm.LoadMem(R3, val, 76, asm.Word),
		asm.Add.Imm(R3, seqMod),
		asm.StoreMem(val, 76, R3, asm.Word),
		asm.StoreMem(val, 72, seq, asm.Word).WithSymbol("setmax"),
		asm.Mov.Imm(R2, 1).WithSymbol("count"),
		xadd(80, R2),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(val, 64, R0, asm.DWord),
		// RFC 3550 A.8 jitter, in 1/16 timestamp units.
		asm.Mov.Reg(now, R0),
		asm.LoadMem(R2, val, 24, asm.Word),
		asm.JEq.Imm(R2, 0, "rewrite"),
		asm.LoadMem(R4, pkt, offRTP+4, asm.Word),
		asm.HostTo(asm.BE, R4, asm.Word),
		asm.LoadMem(R3, val, 88, asm.DWord),
		asm.JEq.Imm(R3, 0, "transit"),
		asm.Mov.Reg(R5, now),
		asm.Sub.Reg(R5, R3),
		asm.LoadImm(R1, 60e9, asm.DWord), // bounds the product below
		asm.JGT.Reg(R5, R1, "transit"),
		asm.Mul.Reg(R5, R2),
		asm.LSh.Imm(R5, 4),
		asm.Div.Imm(R5, 1e9),
		asm.LoadMem(R1, val, 96, asm.Word),
		asm.Mov.Reg(R0, R4),
		asm.Sub.Reg(R0, R1),
		asm.LSh.Imm(R0, 32),
		asm.ArSh.Imm(R0, 32),
		asm.LSh.Imm(R0, 4),
		asm.Sub.Reg(R5, R0),
		asm.JSGE.Imm(R5, 0, "abs"),
		asm.Mov.Imm(R0, 0),
		asm.Sub.Reg(R0, R5),
		asm.Mov.Reg(R5, R0),
		asm.LoadMem(R1, val, 100, asm.Word).WithSymbol("abs"),
		asm.Sub.Reg(R5, R1),
		asm.ArSh.Imm(R5, 4),
		asm.Add.Reg(R5, R1),
		asm.StoreMem(val, 100, R5, asm.Word),
		asm.StoreMem(val, 88, now, asm.DWord).WithSymbol("transit"),
		asm.StoreMem(val, 96, R4, asm.Word),
		// Rewrite: from the other leg's relay socket to its peer.
		asm.LoadMem(R2, val, 8, asm.Word).WithSymbol("rewrite"),
		asm.JNE.Imm(R2, 0, "src"),
		asm.LoadMem(R2, pkt, offDstIP, asm.Word),
		asm.StoreMem(pkt, offSrcIP, R2, asm.Word).WithSymbol("src"),
		asm.LoadMem(R2, val, 16, asm.Word),
		asm.StoreMem(pkt, offDstIP, R2, asm.Word),
		asm.LoadMem(R2, val, 12, asm.Half),
		asm.StoreMem(pkt, offSrcPort, R2, asm.Half),
		asm.LoadMem(R2, val, 14, asm.Half),
		asm.StoreMem(pkt, offDstPort, R2, asm.Half),
		asm.StoreImm(pkt, offUDPCsum, 0, asm.Half), // none: allowed on IPv4
		asm.StoreImm(pkt, offIPCsum, 0, asm.Half),
		asm.Mov.Imm(R2, dscpEF), // as the relay's sockets mark
		asm.StoreMem(pkt, offIP+1, R2, asm.Byte),
		// Forwarded off the machine: one hop more (the TTL is above 1).
		asm.LoadMem(R2, val, 28, asm.Word),
		asm.JEq.Imm(R2, 0, "csum"),
		asm.LoadMem(R2, pkt, offTTL, asm.Byte),
		asm.Sub.Imm(R2, 1),
		asm.StoreMem(pkt, offTTL, R2, asm.Byte),
		asm.Mov.Imm(R2, 0).WithSymbol("csum"),
	)
	// The IPv4 header checksum afresh: one's complement sums do not care
	// about byte order.
	for off := int16(offIP); off < offIP+20; off += 2 {
		in = append(in, asm.LoadMem(R3, pkt, off, asm.Half), asm.Add.Reg(R2, R3))
	}
	for range 2 {
		in = append(in, asm.Mov.Reg(R3, R2), asm.RSh.Imm(R3, 16), asm.And.Imm(R2, 0xffff), asm.Add.Reg(R2, R3))
	}
	return append(in,
		asm.Xor.Imm(R2, 0xffff),
		asm.StoreMem(pkt, offIPCsum, R2, asm.Half),
		asm.Mov.Imm(R2, 1),
		xadd(48, R2),
		asm.LoadMem(R2, pkt, offUDPLen, asm.Byte),
		asm.LSh.Imm(R2, 8),
		asm.LoadMem(R3, pkt, offUDPLen+1, asm.Byte),
		asm.Or.Reg(R2, R3),
		asm.Sub.Imm(R2, 8),
		xadd(56, R2),
		asm.LoadMem(R2, val, 28, asm.Word),
		asm.JEq.Imm(R2, 0, "pass"),
		asm.Mov.Reg(R1, R2), // the device userspace found; the kernel resolves the neighbour
		asm.Mov.Imm(R2, 0),
		asm.Mov.Imm(R3, 0),
		asm.Mov.Imm(R4, 0),
		asm.FnRedirectNeigh.Call(),
		asm.Return(),
		asm.Mov.Imm(R0, 0).WithSymbol("pass"),
		asm.Return(),
		asm.Mov.Imm(R0, -1).WithSymbol("next"),
		asm.Return(),
	)
}

// kernelOffer moves s's direction into the kernel once userspace relays a
// packet of it that the kernel could have: plain RTP both ways, IPv4, both
// sides latched. Called by the loop under its mutex.
func (s *sock) kernelOffer(h rtpHeader, p *params) {
	k := s.e.c.r.kern
	if k == nil || s.kern.Load() != nil || s.noKern || s.isRTCP || s.v6 || p.opaque || p.dtmf[h.pt] || p.clock[h.pt] == 0 {
		return
	}
	e, to := s.e, s.e.peer
	rx, tx, dst := e.rx.Load(), to.tx.Load(), to.rtp
	l, dl := s.latch.Load(), dst.latch.Load()
	st := &e.stats
	if rx == nil || tx == nil || rx.rtp != nil || tx.rtp != nil || dst.v6 || l == nil || dl == nil ||
		!l.latched || !dl.latched || l.ssrc != h.ssrc || !l.peer.Addr().Is4() || !dl.peer.Addr().Is4() ||
		!st.started || st.ssrc != h.ssrc {
		return
	}
	ks := &kstream{src: l.peer, ssrc: h.ssrc}
	clock := p.clock[h.pt]
	for pt := range p.clock {
		if p.clock[pt] == clock && !p.dtmf[pt] {
			ks.pts[pt>>6] |= 1 << (pt & 63)
		}
	}
	var v kvalue
	ks.key = kkey(e.ip, e.port)
	v.SrcIP, v.SrcPort = l.peer.Addr().As4(), portBytes(l.peer.Port())
	if !to.ip.IsUnspecified() {
		v.NewSrcIP = to.ip.As4()
	}
	v.NewSrcPort, v.NewDstIP, v.NewDstPort = portBytes(uint16(to.port)), dl.peer.Addr().As4(), portBytes(dl.peer.Port())
	binary.BigEndian.PutUint32(v.SSRC[:], h.ssrc)
	v.Clock, v.PTs = clock, ks.pts
	// Local to local (over loopback) or remote to remote only: a packet
	// from a local socket may carry a partial checksum a NIC would finish
	// wrongly after the rewrite, and one arriving from outside with a local
	// source would be dropped as a martian.
	if k.local[l.peer.Addr()] != k.local[dl.peer.Addr()] {
		s.noKern = true
		return
	}
	if !k.local[dl.peer.Addr()] {
		if v.OutIf = k.outIf(dl.peer); v.OutIf == 0 {
			s.noKern = true // no route now: userspace will say so
			return
		}
	}
	v.MaxSeq, v.Cycles, v.Received = uint32(st.maxSeq), st.cycles, st.received
	v.LastNs = uint64(s.lastRx.Load() + k.mono)
	if st.haveTransit {
		v.LastArr, v.LastTS = uint64(st.lastArrival+k.mono), st.lastTS
		v.Jitter = uint32(st.jitter * float64(clock) * 16)
	}
	if err := k.streams.Update(ks.key[:], &v, ebpf.UpdateNoExist); err != nil {
		s.noKern = true
		s.e.c.r.log.Warn("media: kernel offload failed, staying in userspace", "port", e.port, "err", err)
		return
	}
	s.kern.Store(ks)
	k.offloaded.Add(1)
}

// kernelTakeBack takes s's direction back from the kernel when a packet
// of the offloaded source reaches userspace: one the kernel passed up
// uncounted (a sequence jump, telephone-event) or one that arrived before
// the entry did. Either way userspace counts it, so every packet is
// counted once, by one side; the next relayed audio packet offers again.
func (s *sock) kernelTakeBack(src netip.AddrPort) {
	if ks := s.kern.Load(); ks != nil && src == ks.src {
		s.kernelDrop()
	}
}

// kernelRelatch drops the entries that depend on s's latch: its own and
// the one forwarding to its peer.
func (s *sock) kernelRelatch() {
	s.kernelDrop()
	if !s.isRTCP {
		s.e.peer.rtp.kernelDrop()
	}
}

// kernelDrop takes s's direction back from the kernel, merging the
// kernel's counters and receiver state into s. The caller holds the
// loop's mutex, or the loop is not running s.
func (s *sock) kernelDrop() {
	s.noKern = false
	ks := s.kern.Swap(nil)
	if ks == nil {
		return
	}
	k := s.e.c.r.kern
	k.offloaded.Add(-1)
	var v kvalue
	if err := k.streams.LookupAndDelete(ks.key[:], &v); err != nil {
		return
	}
	k.retired.Add(v.Packets)
	s.packets.Add(v.Packets)
	s.bytes.Add(v.Bytes)
	if last := int64(v.LastNs) - k.mono; last > s.lastRx.Load() {
		s.lastRx.Store(last)
	}
	st := &s.e.stats
	st.maxSeq, st.cycles, st.received = uint16(v.MaxSeq), v.Cycles, v.Received
	if v.LastArr != 0 {
		st.haveTransit, st.lastArrival, st.lastTS = true, int64(v.LastArr)-k.mono, v.LastTS
		st.jitter = float64(v.Jitter) / 16 / float64(v.Clock)
	}
}

// kernelLive returns what the kernel forwarded and last received on s's
// direction since the offload.
func (s *sock) kernelLive() (packets, bytes uint64, lastRx int64) {
	ks := s.kern.Load()
	if ks == nil {
		return 0, 0, 0
	}
	k := s.e.c.r.kern
	var v kvalue
	if err := k.streams.Lookup(ks.key[:], &v); err != nil {
		return 0, 0, 0
	}
	return v.Packets, v.Bytes, int64(v.LastNs) - k.mono
}

// outIf returns the index of the device the kernel routes to dst by, 0 if
// unknown: the one holding the source address a connected socket gets.
func (k *kernel) outIf(dst netip.AddrPort) uint32 {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer syscall.Close(fd)
	if syscall.Connect(fd, &syscall.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}) != nil {
		return 0
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return 0
	}
	src := netip.AddrFrom4(sa.(*syscall.SockaddrInet4).Addr)
	ifaces, _ := net.Interfaces()
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok {
				if ip, _ := netip.AddrFromSlice(p.IP); ip.Unmap() == src {
					return uint32(ifc.Index)
				}
			}
		}
	}
	return 0
}

func kkey(ip netip.Addr, port int) (key [8]byte) {
	if !ip.IsUnspecified() {
		a := ip.As4()
		copy(key[:4], a[:])
	}
	binary.BigEndian.PutUint16(key[4:6], uint16(port))
	return key
}

func portBytes(p uint16) (b [2]byte) {
	binary.BigEndian.PutUint16(b[:], p)
	return b
}

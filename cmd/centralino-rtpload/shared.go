package main

// -shared: every phone of the generator is one UDP socket, written with
// sendmmsg and read with recvmmsg in batches, so that the generator costs
// far less per packet than the relay it measures and can drive 2,000 calls
// and more from one core. The relay sees each leg's packets from the one
// address the leg's SDP names, as with separate phones; the generator tells
// the legs apart by SSRC (2·call + leg + 1).

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"github.com/pion/rtp"
	"golang.org/x/sys/unix"
)

const batch = 64

type mmsghdr struct {
	hdr syscall.Msghdr
	n   uint32
	_   [4]byte
}

// mmsg is a batch of datagrams with their buffers and addresses.
type mmsg struct {
	hdrs  [batch]mmsghdr
	iovs  [batch]syscall.Iovec
	names [batch]syscall.RawSockaddrInet4
	bufs  [batch][2048]byte
}

func newMmsg() *mmsg {
	m := &mmsg{}
	for i := range m.hdrs {
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(len(m.bufs[i]))
		m.hdrs[i].hdr.Iov = &m.iovs[i]
		m.hdrs[i].hdr.Iovlen = 1
		m.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		m.hdrs[i].hdr.Namelen = syscall.SizeofSockaddrInet4
	}
	return m
}

// set makes message i the datagram b to dst.
func (m *mmsg) set(i int, b []byte, dst netip.AddrPort) {
	n := copy(m.bufs[i][:], b)
	m.iovs[i].SetLen(n)
	m.names[i] = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: dst.Addr().As4()}
	p := (*[2]byte)(unsafe.Pointer(&m.names[i].Port))
	p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
}

// sendAll sends messages [0, n) with sendmmsg, waiting for buffer space.
func sendAll(rc syscall.RawConn, m *mmsg, n int) error {
	for off := 0; off < n; {
		var errno syscall.Errno
		err := rc.Write(func(fd uintptr) bool {
			r, _, e := syscall.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[off])), uintptr(n-off), 0, 0, 0)
			if e == syscall.EAGAIN {
				return false
			}
			errno = e
			if e == 0 {
				off += int(r)
			}
			return true
		})
		if err != nil {
			return err
		}
		if errno != 0 {
			return errno
		}
	}
	return nil
}

// recvSome blocks until datagrams arrive and reads up to a batch.
func recvSome(rc syscall.RawConn, m *mmsg) (int, error) {
	for i := range m.hdrs {
		m.iovs[i].SetLen(len(m.bufs[i]))
		m.hdrs[i].hdr.Namelen = syscall.SizeofSockaddrInet4
	}
	var n int
	var errno syscall.Errno
	err := rc.Read(func(fd uintptr) bool {
		r, _, e := syscall.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), batch, syscall.MSG_DONTWAIT, 0, 0)
		if e == syscall.EAGAIN {
			return false
		}
		n, errno = int(r), e
		return true
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// sharedSender sends the paced or unpaced load of all calls from the one
// socket, a batch at a time.
func (g *gen) sendShared(stop time.Time, paced bool) {
	rc, err := g.shared.SyscallConn()
	if err != nil {
		return
	}
	m := newMmsg()
	payload := make([]byte, payloadLen)
	k := 0
	flush := func() {
		if k > 0 {
			if err := sendAll(rc, m, k); err == nil {
				g.sent.Add(uint64(k))
			}
			k = 0
		}
	}
	one := func(c *call) {
		for _, l := range c.legs {
			if pkt := g.packet(l, payload, true); pkt != nil {
				m.set(k, pkt, l.dst)
				if k++; k == batch {
					flush()
				}
			}
		}
	}
	if !paced {
		for time.Now().Before(stop) {
			for _, c := range g.calls {
				one(c)
			}
			flush()
		}
		return
	}
	slots := int(ptime / time.Millisecond)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for slot := int(time.Since(g.start) / time.Millisecond); time.Now().Before(stop); {
		<-tick.C
		for due := int(time.Since(g.start) / time.Millisecond); slot < due; slot++ {
			for i := slot % slots; i < len(g.calls); i += slots {
				one(g.calls[i])
			}
			flush()
		}
	}
}

// receiveShared reads the shared socket until it is closed.
func (g *gen) receiveShared() {
	rc, err := g.shared.SyscallConn()
	if err != nil {
		return
	}
	m := newMmsg()
	var hdr rtp.Header
	for {
		n, err := recvSome(rc, m)
		if err != nil {
			return
		}
		now := time.Since(g.start)
		for i := range n {
			pkt := m.bufs[i][:m.hdrs[i].n]
			if len(pkt) < 12 {
				g.undecodable.Add(1)
				continue
			}
			from := int(binary.BigEndian.Uint32(pkt[8:])) - 1 // the sending leg
			if from < 0 || from/2 >= len(g.calls) {
				g.undecodable.Add(1)
				continue
			}
			to := g.calls[from/2].legs[1-from%2]
			if to.dec != nil {
				if pkt, err = to.dec.DecryptRTP(pkt, pkt, &hdr); err != nil {
					g.undecodable.Add(1)
					continue
				}
			}
			g.arrived(pkt, now)
		}
	}
}

func listenShared(port int) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo, uint16(port))))
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(8 << 20)
	_ = c.SetWriteBuffer(8 << 20)
	return c, nil
}

package sip

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvBatchLen is how many datagrams one recvmmsg(2) may return. On a loaded
// socket the kernel has several queued by the time the reader runs again; on
// a paravirtualised guest a system call costs about a microsecond, and one
// read a datagram was a sixth of the registrar's CPU (docs/benchmarks.md).
const recvBatchLen = 16

// recvBatch reads datagrams from a UDP socket a batch at a time and hands
// them out one by one.
type recvBatch struct {
	rc    syscall.RawConn
	bufs  [recvBatchLen][]byte
	iovs  [recvBatchLen]unix.Iovec
	names [recvBatchLen]unix.RawSockaddrAny
	hdrs  [recvBatchLen]unix.Mmsghdr
	n     int // datagrams in the batch
	next  int // the next one to hand out

	// recvmmsg's results, and the function that makes it, bound once: a
	// closure made per call would be an allocation.
	got      int
	errno    syscall.Errno
	recvmmsg func(fd uintptr) bool
}

func newRecvBatch(c *net.UDPConn, size int) *recvBatch {
	rc, err := c.SyscallConn()
	if err != nil {
		panic(err) // only for a closed or non-syscall conn: never a listener's
	}
	r := &recvBatch{rc: rc}
	for i := range r.hdrs {
		r.bufs[i] = make([]byte, size)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(size)
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.recvmmsg = func(fd uintptr) bool {
		for {
			got, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), recvBatchLen, 0, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait for the socket to be readable
			}
			r.got, r.errno = int(got), e
			return true
		}
	}
	return r
}

// read returns the next datagram, valid until the following read, and its
// source. It blocks, in Go's poller, until one comes.
func (r *recvBatch) read() ([]byte, netip.AddrPort, error) {
	if r.next == r.n {
		if err := r.fill(); err != nil {
			return nil, netip.AddrPort{}, err
		}
	}
	i := r.next
	r.next++
	return r.bufs[i][:r.hdrs[i].Len], sockaddrPort(&r.names[i]), nil
}

func (r *recvBatch) fill() error {
	for i := range r.hdrs {
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrAny
	}
	if err := r.rc.Read(r.recvmmsg); err != nil {
		return err
	}
	if r.errno != 0 {
		return &net.OpError{Op: "recvmmsg", Net: "udp", Err: r.errno}
	}
	r.n, r.next = r.got, 0
	return nil
}

// sockaddrPort reads an IPv4 or IPv6 source address as the kernel wrote it.
func sockaddrPort(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), ntohs(in.Port))
	case unix.AF_INET6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		ip := netip.AddrFrom16(in.Addr).Unmap() // an IPv4 phone on a dual-stack socket, as net reports it
		if in.Scope_id != 0 && ip.Is6() {
			ip = ip.WithZone(strconv.FormatUint(uint64(in.Scope_id), 10))
		}
		return netip.AddrPortFrom(ip, ntohs(in.Port))
	}
	return netip.AddrPort{}
}

func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

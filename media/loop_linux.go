package media

import (
	"net/netip"
	"sync"
	"syscall"
	"unsafe"
)

// A loop serves relay sockets from one goroutine: an epoll set
// (level-triggered) holding every socket of the calls assigned to it, read
// with one non-blocking recvfrom per ready socket per round and answered
// with one sendto, both raw system calls on the loop's own buffers.
//
// Against a goroutine per socket on the Go netpoller this saves, per
// packet, the second recvfrom that only learns EAGAIN, a park and a wake-up
// of a goroutine, and the runtime's poll bookkeeping; it serves ready
// sockets in the kernel's round-robin order, one datagram each, so a busy
// relay delays every stream a little rather than some a lot; and it keeps
// no goroutine stack nor buffer per socket. The relay runs GOMAXPROCS
// loops and puts all the sockets of a call on one loop, so a stream's two
// directions, and their SRTP contexts, are only ever touched by one goroutine.
type loop struct {
	r    *Relay
	epfd int
	wake int // eventfd written by stop

	// mu is held by the loop while it serves a batch of ready sockets, and
	// by add and remove: after remove returns, the loop never touches the
	// socket again.
	mu    sync.Mutex
	socks []*sock // by token (the epoll data); nil when free
	free  []int32
	done  chan struct{}

	// Scratch of the loop goroutine.
	events [256]syscall.EpollEvent
	in     [bufSize]byte
	out    [bufSize]byte // SRTP encryption
	from   syscall.RawSockaddrAny
	to     syscall.RawSockaddrInet6 // large enough for both families
}

const wakeToken = -1

func newLoop(r *Relay) (*loop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if e != 0 {
		syscall.Close(epfd)
		return nil, e
	}
	lp := &loop{r: r, epfd: epfd, wake: int(wake), done: make(chan struct{})}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, lp.wake, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeToken}); err != nil {
		syscall.Close(epfd)
		syscall.Close(lp.wake)
		return nil, err
	}
	go lp.run()
	return lp, nil
}

func (lp *loop) run() {
	defer close(lp.done)
	for {
		n, err := syscall.EpollWait(lp.epfd, lp.events[:], -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			lp.r.log.Error("media: epoll_wait", "err", err)
			return
		}
		lp.mu.Lock()
		for i := range n {
			tok := lp.events[i].Fd
			if tok == wakeToken {
				lp.mu.Unlock()
				return
			}
			if s := lp.socks[tok]; s != nil {
				lp.serve(s)
			}
		}
		lp.mu.Unlock()
	}
}

// serve relays one datagram waiting on s, if any.
func (lp *loop) serve(s *sock) {
	fromLen := uint32(syscall.SizeofSockaddrAny)
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&lp.in[0])), bufSize,
		0, uintptr(unsafe.Pointer(&lp.from)), uintptr(unsafe.Pointer(&fromLen)))
	if e != 0 {
		return // EAGAIN: another round drained it
	}
	var src netip.AddrPort
	switch lp.from.Addr.Family {
	case syscall.AF_INET:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&lp.from))
		src = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), getPort(&sa.Port))
	case syscall.AF_INET6:
		sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&lp.from))
		src = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), getPort(&sa.Port))
	default:
		return
	}
	s.forward(lp.in[:n], src, lp.r.now())
}

// sendto sends b from s to dst without blocking: a full socket buffer
// drops the packet, as a late one is no better for RTP.
func (lp *loop) sendto(s *sock, b []byte, dst netip.AddrPort) bool {
	var size uintptr
	a := dst.Addr()
	switch {
	case a.Is4() && !s.v6:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&lp.to))
		*sa = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: a.As4()}
		putPort(&sa.Port, dst.Port())
		size = syscall.SizeofSockaddrInet4
	case a.Is6() && s.v6:
		lp.to = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Addr: a.As16()}
		putPort(&lp.to.Port, dst.Port())
		size = syscall.SizeofSockaddrInet6
	default:
		return false
	}
	if len(b) == 0 {
		return false
	}
	_, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(s.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		0, uintptr(unsafe.Pointer(&lp.to)), size)
	return e == 0
}

// add registers s (its fd open and bound) with the loop.
func (lp *loop) add(s *sock) error {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	var tok int32
	if n := len(lp.free); n > 0 {
		tok, lp.free = lp.free[0], lp.free[1:]
	} else {
		tok = int32(len(lp.socks))
		lp.socks = append(lp.socks, nil)
	}
	if err := syscall.EpollCtl(lp.epfd, syscall.EPOLL_CTL_ADD, s.fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: tok}); err != nil {
		lp.free = append(lp.free, tok)
		return err
	}
	lp.socks[tok], s.tok, s.lp = s, tok, lp
	return nil
}

// remove stops serving s and closes its socket; the loop is not inside s
// when it returns.
func (lp *loop) remove(s *sock) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if s.fd < 0 {
		return
	}
	s.kernelDrop()
	_ = syscall.EpollCtl(lp.epfd, syscall.EPOLL_CTL_DEL, s.fd, nil)
	syscall.Close(s.fd)
	s.fd = -1
	lp.socks[s.tok] = nil
	lp.free = append(lp.free, s.tok) // first in, first out: a stale event finds nil or EAGAIN
}

// stop ends the loop goroutine and frees the epoll set; sockets must have
// been removed.
func (lp *loop) stop() {
	one := [8]byte{1}
	_, _ = syscall.Write(lp.wake, one[:])
	<-lp.done
	syscall.Close(lp.epfd)
	syscall.Close(lp.wake)
}

// bindUDP opens a non-blocking UDP socket on ip:port, outside the Go
// netpoller (a loop serves it).
func bindUDP(ip netip.Addr, port int) (int, error) {
	var family int
	var sa syscall.Sockaddr
	if ip.Is6() {
		family, sa = syscall.AF_INET6, &syscall.SockaddrInet6{Port: port, Addr: ip.As16()}
	} else {
		family, sa = syscall.AF_INET, &syscall.SockaddrInet4{Port: port, Addr: ip.As4()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if ip.Is6() {
		err = syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 1)
		// Best effort from here: DSCP EF (RFC 4594 telephony).
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_TCLASS, dscpEF)
	} else {
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_IP, syscall.IP_TOS, dscpEF)
	}
	// The kernel caps silently, and a smaller buffer still works.
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, sockBuf)
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, sockBuf)
	if err == nil {
		err = syscall.Bind(fd, sa)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// dscpEF is the TOS/traffic class byte of DSCP 46 (expedited forwarding).
const dscpEF = 0xb8

// Ports in socket addresses are in network byte order.
func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

func closeFD(fd int) {
	if fd >= 0 {
		syscall.Close(fd)
	}
}

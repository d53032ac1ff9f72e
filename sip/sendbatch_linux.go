package sip

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendBatchLen is how many datagrams one sendmmsg(2) may carry.
const sendBatchLen = 16

// sendBatch sends the registrar's answers from one goroutine, as many a
// system call as have queued meanwhile: under load the workers answer faster
// than one sendto(2) each goes (about a microsecond on this kind of guest,
// more with the wake-up of the receiver it often causes).
type sendBatch struct {
	rc      syscall.RawConn
	inet6   bool // the socket is AF_INET6 (IPv4 peers as mapped addresses)
	queue   chan datagram
	done    chan struct{}
	closing sync.Once
	failed  func(dst netip.AddrPort, err error)

	hdrs  [sendBatchLen]unix.Mmsghdr
	iovs  [sendBatchLen]unix.Iovec
	names [sendBatchLen]unix.RawSockaddrInet6 // large enough for either family

	// The system call's arguments and results, and the function that makes
	// it, bound once: a closure made per call would be an allocation.
	from, count int
	sent        int
	errno       syscall.Errno
	sendmmsg    func(fd uintptr) bool
}

// datagram is an answer to send; its data is not written to afterwards.
type datagram struct {
	data []byte
	dst  netip.AddrPort
}

func newSendBatch(c *net.UDPConn, failed func(netip.AddrPort, error)) *sendBatch {
	rc, err := c.SyscallConn()
	if err != nil {
		panic(err) // only for a closed or non-syscall conn: never a listener's
	}
	s := &sendBatch{rc: rc, queue: make(chan datagram, 4*sendBatchLen), done: make(chan struct{}), failed: failed}
	_ = rc.Control(func(fd uintptr) {
		if sa, err := unix.Getsockname(int(fd)); err == nil {
			_, s.inet6 = sa.(*unix.SockaddrInet6)
		}
	})
	for i := range s.hdrs {
		s.hdrs[i].Hdr.Iov = &s.iovs[i]
		s.hdrs[i].Hdr.SetIovlen(1)
		s.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.names[i]))
	}
	s.sendmmsg = func(fd uintptr) bool {
		for {
			got, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[s.from])), uintptr(s.count), 0, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait for room in the socket's buffer
			}
			s.sent, s.errno = int(got), e
			return true
		}
	}
	go s.run()
	return s
}

// send queues data for dst; it blocks while the queue is full, and drops
// the datagram once the socket is closed.
func (s *sendBatch) send(data []byte, dst netip.AddrPort) {
	select {
	case s.queue <- datagram{data, dst}:
	case <-s.done:
	}
}

// close ends the sending goroutine; answers still queued are dropped, as
// the socket they would leave from is closing.
func (s *sendBatch) close() {
	s.closing.Do(func() { close(s.done) })
}

func (s *sendBatch) run() {
	var batch [sendBatchLen]datagram
	for {
		select {
		case batch[0] = <-s.queue:
		case <-s.done:
			return
		}
		n := 1
	more:
		for n < sendBatchLen {
			select {
			case batch[n] = <-s.queue:
				n++
			default:
				break more
			}
		}
		s.write(batch[:n])
		clear(batch[:n])
	}
}

// write sends batch with as few sendmmsg calls as the kernel allows; a
// datagram the kernel refuses is reported and skipped.
func (s *sendBatch) write(batch []datagram) {
	n := 0
	for _, d := range batch {
		if !s.inet6 && !d.dst.Addr().Unmap().Is4() || len(d.data) == 0 {
			s.failed(d.dst, syscall.EAFNOSUPPORT)
			continue
		}
		s.iovs[n].Base = unsafe.SliceData(d.data)
		s.iovs[n].SetLen(len(d.data))
		s.hdrs[n].Hdr.Namelen = s.sockaddr(&s.names[n], d.dst)
		batch[n] = d
		n++
	}
	batch = batch[:n]
	for sent := 0; sent < len(batch); {
		s.from, s.count = sent, len(batch)-sent
		err := s.rc.Write(s.sendmmsg)
		switch {
		case err != nil: // closed
			for _, d := range batch[sent:] {
				s.failed(d.dst, err)
			}
			return
		case s.errno != 0: // the first datagram of the rest failed
			s.failed(batch[sent].dst, s.errno)
			sent++
		default:
			sent += s.sent
		}
	}
}

// sockaddr writes dst into sa in the socket's family and returns its length.
func (s *sendBatch) sockaddr(sa *unix.RawSockaddrInet6, dst netip.AddrPort) uint32 {
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], dst.Port())
	if !s.inet6 {
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*in = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: *(*uint16)(unsafe.Pointer(&port)), Addr: dst.Addr().As4()}
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: *(*uint16)(unsafe.Pointer(&port)), Addr: dst.Addr().As16()}
	return unix.SizeofSockaddrInet6
}

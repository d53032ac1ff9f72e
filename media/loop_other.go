//go:build !linux

package media

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// Outside Linux a loop is a goroutine per socket on the Go netpoller, all
// of a loop's sockets serialised by its mutex, so that, as on Linux, a
// call's SRTP contexts and the loop's buffer are used by one goroutine at a
// time. Slower; the Linux event loop is what the benchmarks measure.
type loop struct {
	r   *Relay
	mu  sync.Mutex
	wg  sync.WaitGroup
	out [bufSize]byte
}

// sockOS is the socket's connection outside Linux.
type sockOS struct{ conn *net.UDPConn }

var (
	bound   sync.Map // fd → *net.UDPConn, from bindUDP until add
	boundMu sync.Mutex
	nextFD  int
)

func newLoop(r *Relay) (*loop, error) { return &loop{r: r}, nil }

func bindUDP(ip netip.Addr, port int) (int, error) {
	conn, err := listenUDP(ip, port)
	if err != nil {
		return -1, err
	}
	boundMu.Lock()
	nextFD++
	fd := nextFD
	boundMu.Unlock()
	bound.Store(fd, conn)
	return fd, nil
}

func closeFD(fd int) {
	if c, ok := bound.LoadAndDelete(fd); ok {
		c.(*net.UDPConn).Close()
	}
}

func (lp *loop) add(s *sock) error {
	c, ok := bound.LoadAndDelete(s.fd)
	if !ok {
		return errors.New("media: socket not bound")
	}
	s.conn, s.lp = c.(*net.UDPConn), lp
	lp.wg.Add(1)
	go func() {
		defer lp.wg.Done()
		buf := make([]byte, bufSize)
		for {
			n, src, err := s.conn.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			lp.mu.Lock()
			if err == nil && s.fd >= 0 {
				s.forward(buf[:n], src, lp.r.now())
			}
			lp.mu.Unlock()
		}
	}()
	return nil
}

func (lp *loop) remove(s *sock) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if s.fd < 0 {
		return
	}
	s.conn.Close()
	s.fd = -1
}

func (lp *loop) stop() { lp.wg.Wait() }

func (lp *loop) sendto(s *sock, b []byte, dst netip.AddrPort) bool {
	if s.conn == nil || s.fd < 0 {
		return false
	}
	_, err := s.conn.WriteToUDPAddrPort(b, dst)
	return err == nil
}

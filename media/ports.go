package media

import (
	"net"
	"net/netip"
	"sync"
)

// sockBuf is the kernel buffer asked for on each relay socket: a burst after
// a scheduling pause must not overflow it (the kernel caps it at rmem_max).
const sockBuf = 2 << 20

// portPool hands out even RTP ports (RTP+1 is the RTCP port) first in,
// first out, so a port freed by one call is reused as late as possible and
// stray packets of the old call do not reach the new one.
type portPool struct {
	mu   sync.Mutex
	free []int
}

func newPortPool(min, max int) *portPool {
	p := &portPool{}
	for port := min + min%2; port+1 <= max; port += 2 {
		p.free = append(p.free, port)
	}
	return p
}

func (p *portPool) get() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 {
		return 0, false
	}
	port := p.free[0]
	p.free = p.free[1:]
	return port, true
}

func (p *portPool) put(port int) {
	p.mu.Lock()
	p.free = append(p.free, port)
	p.mu.Unlock()
}

func (p *portPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// bind takes a pair from the pool and binds its RTP port on ip, skipping
// pairs of which another process holds either port: the RTCP port is bound
// only when a negotiation lacks rtcp-mux, and an ephemeral port of another
// program there would fail that call.
func (p *portPool) bind(ip netip.Addr) (int, int, error) {
	for range p.size() + 1 {
		port, ok := p.get()
		if !ok {
			break
		}
		fd, err := bindUDP(ip, port)
		if err == nil {
			rtcp, err := bindUDP(ip, port+1)
			closeFD(rtcp)
			if err == nil {
				return port, fd, nil
			}
			closeFD(fd)
		}
		p.put(port)
	}
	return 0, -1, ErrNoPorts
}

func listenUDP(ip netip.Addr, port int) (*net.UDPConn, error) {
	network := "udp4"
	if ip.Is6() {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
	if err != nil {
		return nil, err
	}
	// Best effort: the kernel caps silently and a smaller buffer still works.
	_ = conn.SetReadBuffer(sockBuf)
	_ = conn.SetWriteBuffer(sockBuf)
	return conn, nil
}

//go:build !linux

package sip

import (
	"net"
	"net/netip"
)

// recvBatch reads one datagram at a time where recvmmsg(2) is not at hand.
type recvBatch struct {
	c   *net.UDPConn
	buf []byte
}

func newRecvBatch(c *net.UDPConn, size int) *recvBatch {
	return &recvBatch{c: c, buf: make([]byte, size)}
}

// read returns the next datagram, valid until the following read, and its source.
func (r *recvBatch) read() ([]byte, netip.AddrPort, error) {
	n, src, err := r.c.ReadFromUDPAddrPort(r.buf)
	return r.buf[:n], src, err
}

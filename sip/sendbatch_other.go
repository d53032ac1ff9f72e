//go:build !linux

package sip

import (
	"net"
	"net/netip"
)

// sendBatch sends each answer at once where sendmmsg(2) is not at hand.
type sendBatch struct {
	c      *net.UDPConn
	failed func(dst netip.AddrPort, err error)
}

func newSendBatch(c *net.UDPConn, failed func(netip.AddrPort, error)) *sendBatch {
	return &sendBatch{c: c, failed: failed}
}

func (s *sendBatch) send(data []byte, dst netip.AddrPort) {
	if _, err := s.c.WriteToUDPAddrPort(data, dst); err != nil {
		s.failed(dst, err)
	}
}

func (s *sendBatch) close() {}

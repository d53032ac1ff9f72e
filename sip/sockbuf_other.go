//go:build !linux

package sip

import "net"

// setSocketBuffers sizes both buffers of c; the sizes granted are unknown.
func setSocketBuffers(c *net.UDPConn, size int) (rcv, snd int) {
	_ = c.SetReadBuffer(size)
	_ = c.SetWriteBuffer(size)
	return -1, -1
}

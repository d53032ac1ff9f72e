package sip

import (
	"net"
	"syscall"
)

// setSocketBuffers sizes both buffers of c, beyond net.core.rmem_max and
// wmem_max when the process may (SO_RCVBUFFORCE needs CAP_NET_ADMIN), and
// returns the sizes granted.
func setSocketBuffers(c *net.UDPConn, size int) (rcv, snd int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, -1
	}
	rcv, snd = -1, -1
	_ = rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{syscall.SO_RCVBUFFORCE, syscall.SO_RCVBUF}, {syscall.SO_SNDBUFFORCE, syscall.SO_SNDBUF}} {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o[0], size) != nil {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, o[1], size)
			}
		}
		// Linux reports twice the size asked (it counts its bookkeeping).
		if n, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err == nil {
			rcv = n / 2
		}
		if n, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF); err == nil {
			snd = n / 2
		}
	})
	return rcv, snd
}

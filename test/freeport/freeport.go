// Package freeport hands tests loopback ports to give the processes they
// start (switches, gateways, Redis servers).
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"
)

// Ports are drawn below Linux's ephemeral range (32768-60999) and below the
// switch's default RTP range (30000-39999): a port the kernel hands out
// itself can be taken by any outgoing connection (an HTTP poll, a Redis
// client) between the test's check and the child process's bind, which then
// exits with "address already in use".
const (
	lowest  = 20000
	highest = 29999
)

// Port returns a port free for both UDP and TCP on 127.0.0.1 and, where the
// host has it, on [::1].
func Port(tb testing.TB) int {
	tb.Helper()
	for range 100 {
		if p := lowest + rand.IntN(highest-lowest+1); free(p) {
			return p
		}
	}
	tb.Fatal("freeport: no free port")
	return 0
}

func free(p int) bool {
	for _, host := range []string{"127.0.0.1", "::1"} {
		addr := net.JoinHostPort(host, fmt.Sprint(p))
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			if host == "::1" && errors.Is(err, syscall.EADDRNOTAVAIL) {
				continue // no IPv6 loopback here
			}
			return false
		}
		u.Close()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

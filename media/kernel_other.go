//go:build !linux

package media

import (
	"errors"
	"net/netip"
	"sync/atomic"
)

// In-kernel forwarding is Linux only (eBPF): elsewhere the loops forward
// everything.
type kernel struct {
	offloaded atomic.Int64
}

func newKernel(*Relay) (*kernel, error) {
	return nil, errors.New("in-kernel forwarding needs Linux")
}

func (*kernel) close()          {}
func (*kernel) packets() uint64 { return 0 }

func (*sock) kernelOffer(rtpHeader, *params)                    {}
func (*sock) kernelTakeBack(netip.AddrPort)                     {}
func (*sock) kernelRelatch()                                    {}
func (*sock) kernelDrop()                                       {}
func (*sock) kernelLive() (packets, bytes uint64, lastRx int64) { return 0, 0, 0 }

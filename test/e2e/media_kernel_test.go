package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/test/sipua"
)

// With media.kernel on (root, eBPF), a plain call's audio is forwarded in
// the kernel once both phones are latched: it still arrives, the metrics
// count it, and the streams leave the kernel with the call.
func TestPlainCallForwardedInTheKernel(t *testing.T) {
	n := startNode(t, nodeOptions{}) // the default media.kernel: auto
	if !kernelMetricPresent(n) {
		t.Skip("in-kernel forwarding unavailable here (needs root and eBPF)")
	}
	m := placeMediaCall(t, n, func(p *sipua.Phone) []byte { return p.SDP() })
	exchange := func(seq uint16) {
		t.Helper()
		payload := []byte(fmt.Sprint("voce ", seq))
		sipua.SendRTP(t, m.caller.RTP, m.toCallee, 0, seq, payload)
		if p, _ := sipua.ReceiveRTP(t, m.callee.RTP); string(p) != string(payload) {
			t.Fatalf("the callee heard %q, want %q", p, payload)
		}
		sipua.SendRTP(t, m.callee.RTP, m.toCaller, 0, seq, payload)
		if p, _ := sipua.ReceiveRTP(t, m.caller.RTP); string(p) != string(payload) {
			t.Fatalf("the caller heard %q, want %q", p, payload)
		}
	}
	exchange(1) // latches both sides; the callee's packet, its side latched second, offloads callee→caller
	exchange(2) // the caller's packet offloads caller→callee; the callee's goes through the kernel
	deadline := time.Now().Add(2 * time.Second)
	for n.metric(t, "centralino_media_kernel_streams") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if v := n.metric(t, "centralino_media_kernel_streams"); v != 2 {
		t.Fatalf("centralino_media_kernel_streams = %v, want 2", v)
	}
	for seq := uint16(3); seq < 23; seq++ {
		exchange(seq)
	}
	if v := n.metric(t, "centralino_media_kernel_packets_total"); v != 41 {
		t.Errorf("centralino_media_kernel_packets_total = %v, want 41", v)
	}
	if v := n.metric(t, "centralino_media_packets_total"); v != 44 {
		t.Errorf("centralino_media_packets_total = %v, want the kernel's 41 and userspace's 3", v)
	}
	if bye := m.caller.Bye(m.inv, m.res); bye.StatusCode != 200 {
		t.Fatalf("BYE: %d", bye.StatusCode)
	}
	deadline = time.Now().Add(2 * time.Second)
	for n.metric(t, "centralino_media_kernel_streams") != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if v := n.metric(t, "centralino_media_kernel_streams"); v != 0 {
		t.Errorf("centralino_media_kernel_streams = %v after BYE", v)
	}
}

// kernelMetricPresent tells whether the relay exposes the kernel metrics,
// i.e. forwards in the kernel.
func kernelMetricPresent(n *node) bool {
	_, body := n.get("/metrics")
	return strings.Contains(body, "centralino_media_kernel_packets_total ")
}

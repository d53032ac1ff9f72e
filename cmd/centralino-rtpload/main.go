// Command centralino-rtpload drives concurrent calls through the media relay
// on loopback and prints forwarded packets/s, loss, one-way latency
// percentiles, CPU and memory.
//
// Each call is two UDP "phones" connected through the relay's Offer/Answer
// (with rtcp-mux unless -mux=false). In paced mode every leg sends a G.711
// packet (172 bytes) every 20 ms, phases spread over the 20 ms; -unpaced
// sends as fast as the sender goroutines can. The send time travels in the
// payload, so latency is the full phone→relay→phone path. -srtp makes leg a
// an SDES SRTP softphone (AES_CM_128_HMAC_SHA1_80), bridged to plain leg b.
//
// Modes:
//
//   - -mode both (default): relay and generator in one process; CPU is the
//     whole process.
//   - -mode relay: only the relay, controlled over a minimal rtpengine "ng"
//     protocol on -ng (offer, answer, delete, ping), until SIGINT/SIGTERM or
//     -max-life. The shared rtpbench harness drives it with
//     RELAYS=ext EXT_CONTROL=ng EXT_NG=<-ng> EXT_PID=<pid>.
//   - -mode gen: only the generator, setting calls up over -ng (this relay in
//     -mode relay, or rtpengine); -relay-pid reports the relay's CPU and RSS.
//     -direct skips the relay: the generator's own latency floor.
//
// Pin them apart for figures comparable to the harness's (run.sh does):
//
//	taskset -c 0 centralino-rtpload -mode relay -ng 127.0.0.1:2224 &
//	taskset -c 1 centralino-rtpload -mode gen -ng 127.0.0.1:2224 -relay-pid $! -calls 1000 -duration 20s
//	taskset -c 1 centralino-rtpload -mode gen -direct -calls 1000 -duration 20s
package main

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/bits"
	"net"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lineamica/centralino/media"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

const (
	maxCalls    = 6000
	maxDuration = 5 * time.Minute
	ptime       = 20 * time.Millisecond
	payloadLen  = 160
)

var lo = netip.MustParseAddr("127.0.0.1")

func main() {
	mode := flag.String("mode", "both", "both | relay | gen")
	calls := flag.Int("calls", 100, fmt.Sprintf("concurrent calls (max %d)", maxCalls))
	duration := flag.Duration("duration", 10*time.Second, fmt.Sprintf("send time (max %s)", maxDuration))
	unpaced := flag.Bool("unpaced", false, "send as fast as possible instead of every 20 ms")
	useSRTP := flag.Bool("srtp", false, "leg a speaks SDES SRTP, bridged to plain leg b")
	direct := flag.Bool("direct", false, "no relay: phones send to each other (the generator's floor)")
	mux := flag.Bool("mux", true, "phones offer rtcp-mux (false: the relay also binds RTCP ports)")
	senders := flag.Int("senders", runtime.GOMAXPROCS(0), "sender goroutines")
	basePort := flag.Int("base-port", 2000, "phone ports: call i uses base+2i and base+2i+1 (-shared: base)")
	// Below Linux's ephemeral range (32768–60999), where other programs' sockets would take ports.
	portMin := flag.Int("port-min", 10000, "relay port range (modes both and relay); a call takes 2 pairs")
	portMax := flag.Int("port-max", 31999, "")
	ngAddr := flag.String("ng", "127.0.0.1:2224", "ng control address: listened on (relay), used (gen)")
	relayPID := flag.Int("relay-pid", 0, "gen: the relay's PID, for its CPU and RSS")
	maxLife := flag.Duration("max-life", 15*time.Minute, "relay: exit after this long")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this loopback address")
	kernelMode := flag.String("kernel", "off", "relay: forward latched plain RTP in the kernel: auto | on | off")
	shared := flag.Bool("shared", false, "gen: all phones on one socket, sendmmsg/recvmmsg (a cheaper generator)")
	flag.Parse()
	if *calls < 1 || *calls > maxCalls || *duration <= 0 || *duration > maxDuration || *senders < 1 ||
		*basePort < 1024 || *basePort+2**calls > 65535 || *maxLife <= 0 || *maxLife > time.Hour {
		log.Fatalf("need 1 ≤ calls ≤ %d, 0 < duration ≤ %s, base-port+2·calls ≤ 65535, max-life ≤ 1h", maxCalls, maxDuration)
	}
	if *direct && *useSRTP {
		log.Fatal("-direct and -srtp exclude each other")
	}
	if *pprofAddr != "" {
		go func() { log.Println(http.ListenAndServe(*pprofAddr, nil)) }()
	}
	kernel, ok := media.ParseKernelMode(*kernelMode)
	if !ok {
		log.Fatalf("-kernel %q is not one of auto, on, off", *kernelMode)
	}
	cfg := media.Config{PortMin: *portMin, PortMax: *portMax, BindIPv4: lo, Kernel: kernel}

	var ctl control
	var relayProc proc
	switch *mode {
	case "relay":
		runRelay(cfg, *ngAddr, *maxLife)
		return
	case "gen":
		if !*direct {
			c, err := dialNG(*ngAddr)
			if err != nil {
				log.Fatal(err)
			}
			ctl = c
		}
		relayProc = proc{pid: *relayPID}
	case "both":
		relay, err := media.NewRelay(cfg)
		if err != nil {
			log.Fatal(err)
		}
		defer relay.Close()
		ctl = inProcess{relay}
		relayProc = proc{pid: os.Getpid()}
	default:
		log.Fatalf("unknown -mode %q", *mode)
	}

	selfBefore, relayBefore := rssKB(os.Getpid()), relayProc.rss()
	g := &gen{start: time.Now()}
	if *shared {
		var err error
		if g.shared, err = listenShared(*basePort); err != nil {
			log.Fatal(err)
		}
	}
	for i := range *calls {
		c, err := g.newCall(ctl, fmt.Sprint("load-", i), i, *basePort+2*i, *useSRTP, *direct, *mux)
		if err != nil {
			log.Fatalf("call %d: %v", i, err)
		}
		g.calls = append(g.calls, c)
	}
	relaySetup := relayProc.rss()
	fmt.Printf("mode %s  calls %d  relay %v  srtp %v  mux %v  paced %v  shared %v  GOMAXPROCS %d\n",
		*mode, *calls, !*direct, *useSRTP, *mux, !*unpaced, *shared, runtime.GOMAXPROCS(0))
	fmt.Printf("setup: generator RSS +%d KB, relay RSS +%d KB (%.1f KB/call)\n",
		rssKB(os.Getpid())-selfBefore, relaySetup-relayBefore, float64(relaySetup-relayBefore)/float64(*calls))

	if g.shared != nil {
		go g.receiveShared()
	} else {
		for _, c := range g.calls {
			for _, l := range c.legs {
				go g.receive(l)
			}
		}
	}
	// Prime both directions so the relay latches, as phones do.
	for range 3 {
		for _, c := range g.calls {
			g.sendLegs(c, make([]byte, payloadLen), false)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)

	cpu0, rcpu0, busy0, t0 := cpuTime(), relayProc.cpu(), machineBusy(), time.Now()
	var wg sync.WaitGroup
	stop := time.Now().Add(*duration)
	for s := range *senders {
		if g.shared != nil && s > 0 {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g.shared != nil {
				g.sendShared(stop, !*unpaced)
			} else {
				g.send(s, *senders, stop, !*unpaced)
			}
		}()
	}
	wg.Wait()
	elapsed, cpu, rcpu := time.Since(t0), cpuTime()-cpu0, relayProc.cpu()-rcpu0
	others := machineBusy() - busy0 - cpu
	if *mode != "both" {
		others -= rcpu
	}
	relayLoaded := relayProc.rss()
	time.Sleep(300 * time.Millisecond) // in-flight packets
	for _, c := range g.calls {
		for _, l := range c.legs {
			if l.conn != nil {
				l.conn.Close()
			}
		}
	}
	if g.shared != nil {
		g.shared.Close()
	}
	if ctl != nil {
		for i := range g.calls {
			ctl.release(fmt.Sprint("load-", i))
		}
	}
	g.report(elapsed, cpu, rcpu, others, *calls, *mode, relayLoaded-relayBefore, relayProc.pid != 0)
}

// runRelay serves the relay over ng until a signal or maxLife.
func runRelay(cfg media.Config, addr string, maxLife time.Duration) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() {
		log.Fatalf("-ng %q: must be a loopback ip:port", addr)
	}
	relay, err := media.NewRelay(cfg)
	if err != nil {
		log.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		log.Fatal(err)
	}
	go serveNG(conn, relay)
	fmt.Printf("relay ready: ng %s, ports %d–%d, pid %d, GOMAXPROCS %d\n", ap, cfg.PortMin, cfg.PortMax, os.Getpid(), runtime.GOMAXPROCS(0))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case <-time.After(maxLife):
	}
	conn.Close()
	relay.Close()
	fmt.Println("relay exit")
}

// proc reads another process's CPU time and RSS from /proc (pid 0: none).
type proc struct{ pid int }

func (p proc) cpu() time.Duration {
	if p.pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
}

func (p proc) rss() int64 {
	if p.pid == 0 {
		return 0
	}
	return rssKB(p.pid)
}

// leg is one phone: its socket, where it sends, and its SRTP contexts.
type leg struct {
	conn     *net.UDPConn // nil with -shared
	local    netip.AddrPort
	dst      netip.AddrPort
	ssrc     uint32
	seq      uint16
	enc, dec *srtp.Context // nil for plain RTP
	sendBuf  []byte
	encBuf   []byte
	encHdr   rtp.Header
}

type call struct{ legs [2]*leg }

type gen struct {
	start          time.Time
	shared         *net.UDPConn // -shared: every leg's socket
	calls          []*call
	sent, received atomic.Uint64
	undecodable    atomic.Uint64
	latency        histogram
}

func (g *gen) newCall(ctl control, id string, idx, port int, useSRTP, direct, mux bool) (*call, error) {
	c := &call{}
	for i := range c.legs {
		l := &leg{ssrc: uint32(2*idx + i + 1), sendBuf: make([]byte, 0, 256), encBuf: make([]byte, 0, 256)}
		if g.shared != nil {
			l.local = g.shared.LocalAddr().(*net.UDPAddr).AddrPort()
		} else {
			conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo, uint16(port+i))))
			if err != nil {
				return nil, err
			}
			_ = conn.SetReadBuffer(1 << 20)
			l.conn, l.local = conn, conn.LocalAddr().(*net.UDPAddr).AddrPort()
		}
		c.legs[i] = l
	}
	a, b := c.legs[0], c.legs[1]
	if direct {
		a.dst, b.dst = b.addr(), a.addr()
		return c, nil
	}
	proto, extra := "RTP/AVP", ""
	if mux {
		extra = "a=rtcp-mux\r\n"
	}
	aExtra := extra
	if useSRTP {
		key := make([]byte, 30)
		for i := range key {
			key[i] = byte(i * 7) // a load test needs no secret
		}
		var err error
		if a.enc, err = srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80); err != nil {
			return nil, err
		}
		proto, aExtra = "RTP/SAVP", extra+"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+base64.StdEncoding.EncodeToString(key)+"\r\n"
	}
	toB, err := ctl.offer(id, "a", phoneSDP(a.addr(), proto, aExtra), media.TransportRTP)
	if err != nil {
		return nil, err
	}
	toA, err := ctl.answer(id, "b", phoneSDP(b.addr(), "RTP/AVP", extra))
	if err != nil {
		return nil, err
	}
	if a.dst, err = sdpTarget(toA); err != nil {
		return nil, err
	}
	if b.dst, err = sdpTarget(toB); err != nil {
		return nil, err
	}
	if useSRTP {
		key, err := sdpKey(toA)
		if err != nil {
			return nil, err
		}
		if a.dec, err = srtp.CreateContext(key[:16], key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (l *leg) addr() netip.AddrPort { return l.local }

func phoneSDP(a netip.AddrPort, proto, extra string) []byte {
	return fmt.Appendf(nil, "v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d %s 0\r\na=rtpmap:0 PCMU/8000\r\n%s",
		a.Addr(), a.Addr(), a.Port(), proto, extra)
}

// sdpTarget reads the relay's address and port from a rewritten SDP.
func sdpTarget(sdp []byte) (netip.AddrPort, error) {
	var ip, port string
	for l := range strings.Lines(string(sdp)) {
		l = strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(l, "c=IN IP4 "); ok {
			ip = rest
		}
		if rest, ok := strings.CutPrefix(l, "m=audio "); ok {
			port, _, _ = strings.Cut(rest, " ")
		}
	}
	return netip.ParseAddrPort(ip + ":" + port)
}

// sdpKey reads the relay's SRTP key from a rewritten SDP.
func sdpKey(sdp []byte) ([]byte, error) {
	for l := range strings.Lines(string(sdp)) {
		if _, after, ok := strings.Cut(strings.TrimSpace(l), "inline:"); ok {
			k, _, _ := strings.Cut(after, "|")
			return base64.StdEncoding.DecodeString(k)
		}
	}
	return nil, errors.New("no a=crypto in the relay's answer")
}

// send makes sender s of n send for its share of the calls until stop.
// Paced, call i sends in 1 ms slot i%20 of each 20 ms period.
func (g *gen) send(s, n int, stop time.Time, paced bool) {
	var mine []*call
	for i := s; i < len(g.calls); i += n {
		mine = append(mine, g.calls[i])
	}
	payload := make([]byte, payloadLen)
	if !paced {
		for time.Now().Before(stop) {
			for _, c := range mine {
				g.sendLegs(c, payload, true)
			}
		}
		return
	}
	slots := int(ptime / time.Millisecond)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	// Slots follow the clock, so a late wake-up catches up instead of
	// lowering the rate.
	for slot := int(time.Since(g.start) / time.Millisecond); time.Now().Before(stop); {
		<-tick.C
		for due := int(time.Since(g.start) / time.Millisecond); slot < due; slot++ {
			for i, c := range mine {
				if (i*n+s)%slots == slot%slots {
					g.sendLegs(c, payload, true)
				}
			}
		}
	}
}

// sendLegs sends one packet each way; unmeasured packets (priming) carry
// send time 0 and are not counted.
func (g *gen) sendLegs(c *call, payload []byte, measured bool) {
	for _, l := range c.legs {
		out := g.packet(l, payload, measured)
		if out == nil {
			continue
		}
		conn := l.conn
		if conn == nil {
			conn = g.shared
		}
		if _, err := conn.WriteToUDPAddrPort(out, l.dst); err == nil && measured {
			g.sent.Add(1)
		}
	}
}

// packet makes leg l's next packet, encrypted for an SRTP leg; nil on error.
func (g *gen) packet(l *leg, payload []byte, measured bool) []byte {
	at := uint64(0)
	if measured {
		at = uint64(time.Since(g.start))
	}
	binary.BigEndian.PutUint64(payload, at)
	l.seq++
	h := rtp.Header{Version: 2, SequenceNumber: l.seq, Timestamp: uint32(l.seq) * payloadLen, SSRC: l.ssrc}
	n, err := h.MarshalTo(l.sendBuf[:12])
	if err != nil {
		return nil
	}
	out := append(l.sendBuf[:n], payload...)
	if l.enc != nil {
		if out, err = l.enc.EncryptRTP(l.encBuf[:0], out, &l.encHdr); err != nil {
			return nil
		}
	}
	return out
}

func (g *gen) receive(l *leg) {
	buf := make([]byte, 2048)
	var hdr rtp.Header
	for {
		n, _, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		now := time.Since(g.start)
		pkt := buf[:n]
		if l.dec != nil {
			if pkt, err = l.dec.DecryptRTP(pkt, pkt, &hdr); err != nil {
				g.undecodable.Add(1)
				continue
			}
		}
		g.arrived(pkt, now)
	}
}

// arrived counts a (decrypted) packet received at now.
func (g *gen) arrived(pkt []byte, now time.Duration) {
	if len(pkt) < 12+8 {
		g.undecodable.Add(1)
		return
	}
	sentAt := time.Duration(binary.BigEndian.Uint64(pkt[12:]))
	if sentAt == 0 {
		return // priming
	}
	g.received.Add(1)
	g.latency.add(now - sentAt)
}

func (g *gen) report(elapsed, cpu, relayCPU, others time.Duration, calls int, mode string, relayRSS int64, haveRelay bool) {
	sent, recv := g.sent.Load(), g.received.Load()
	loss := 0.0
	if sent > 0 {
		loss = 1 - float64(recv)/float64(sent)
	}
	fmt.Printf("sent %d  received %d  undecodable %d  loss %.4f%%\n", sent, recv, g.undecodable.Load(), 100*loss)
	fmt.Printf("forwarded %.0f pkt/s over %s\n", float64(recv)/elapsed.Seconds(), elapsed.Round(time.Millisecond))
	fmt.Printf("one-way latency p50 %s  p99 %s  p999 %s  max %s\n",
		g.latency.quantile(0.5), g.latency.quantile(0.99), g.latency.quantile(0.999), g.latency.quantile(1))
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / elapsed.Seconds() }
	perPkt := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 / float64(max(recv, 1)) }
	if mode == "both" {
		fmt.Printf("CPU %.1f%% of one core (relay + generator), %.2f µs per received packet\n", pct(cpu), perPkt(cpu))
	} else {
		fmt.Printf("CPU generator %.1f%% of one core\n", pct(cpu))
	}
	if haveRelay && mode != "both" {
		fmt.Printf("CPU relay %.1f%% of one core, %.2f µs per forwarded packet\n", pct(relayCPU), perPkt(relayCPU))
	}
	fmt.Printf("CPU of other processes (noise) %.1f%% of one core\n", pct(others))
	// Machine-wide is what counts once forwarding runs in softirq, outside
	// the relay's process time.
	machine := cpu + others
	if mode != "both" {
		machine += relayCPU
	}
	if haveRelay {
		fmt.Printf("relay RSS under load +%d KB over idle (%.1f KB per call)\n", relayRSS, float64(relayRSS)/float64(calls))
	}
	fmt.Printf("RESULT mode=%s calls=%d fwd_pps=%.0f loss_pct=%.4f p50_us=%d p99_us=%d p999_us=%d relay_cpu_pct=%.1f relay_us_per_pkt=%.2f gen_cpu_pct=%.1f relay_kb_per_call=%.1f others_cpu_pct=%.1f machine_cpu_pct=%.1f load1=%s\n",
		mode, calls, float64(recv)/elapsed.Seconds(), 100*loss,
		g.latency.quantile(0.5).Microseconds(), g.latency.quantile(0.99).Microseconds(), g.latency.quantile(0.999).Microseconds(),
		pct(relayCPU), perPkt(relayCPU), pct(cpu), float64(relayRSS)/float64(calls), pct(others), pct(machine), load1())
}

// histogram is a lock-free log-linear latency histogram in microseconds:
// exact below 64 µs, then 32 buckets per power of two (about 3%).
type histogram struct{ b [32 * 40]atomic.Uint64 }

func (h *histogram) add(d time.Duration) {
	h.b[min(bucket(uint64(max(d, 0)/time.Microsecond)), len(h.b)-1)].Add(1)
}

func bucket(us uint64) int {
	if us < 64 {
		return int(us)
	}
	e := bits.Len64(us) - 6 // us>>e is in [32, 63]
	return (e+1)*32 + int(us>>e) - 32
}

// bucketUpper is the largest value of bucket i.
func bucketUpper(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	e, m := i/32-1, uint64(i%32+32)
	return (m+1)<<e - 1
}

func (h *histogram) quantile(q float64) time.Duration {
	var counts [len(histogram{}.b)]uint64
	var total uint64
	for i := range h.b {
		counts[i] = h.b[i].Load()
		total += counts[i]
	}
	target, seen := max(uint64(q*float64(total)), 1), uint64(0)
	for i, c := range counts {
		if seen += c; seen >= target {
			return time.Duration(bucketUpper(i)) * time.Microsecond
		}
	}
	return 0
}

// machineBusy is the CPU time all CPUs spent not idle, from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var busy int64
	for i, f := range strings.Fields(line)[1:] {
		var v int64
		fmt.Sscan(f, &v)
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

func load1() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssKB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for l := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(rest, &kb)
			return kb
		}
	}
	return 0
}

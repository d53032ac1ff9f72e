// Package media anchors the RTP, RTCP and SRTP of calls through the switch:
// it rewrites SDP offers and answers to point at relay ports, relays the
// packets, bridges SRTP and plain RTP, measures quality and reports media
// timeouts and DTMF. It knows SDP and RTP, not SIP dialogs.
//
// # API
//
//	r, err := media.NewRelay(media.Config{PortMin: 30000, PortMax: 39999, AdvertiseIPv4: pub})
//	r.OnTimeout(func(callID string, q media.Quality) { /* BYE both sides, Reason: media timeout */ })
//	r.OnDTMF(func(callID, leg string, digit rune, d time.Duration) { /* publish */ })
//	out, err := r.Offer(callID, tag, sdp, media.LegOptions{Source: ip, PeerTransport: media.TransportRTP})
//	out, err := r.Answer(callID, tag, sdp, media.LegOptions{Source: ip})
//	q, ok := r.Release(callID)
//	r.Close()
//
// # How the proxy calls it
//
// The tag names the side that wrote the SDP: the From tag of a request
// carrying an offer, the To tag of a response carrying an answer (and the
// other way round for a late offer in a 200 answered in the ACK). The first
// offerer is leg "a", the other side leg "b".
//
//   - INVITE with SDP: Offer; forward the result. Pass PeerTransport (and
//     PeerFamily) for the target: TransportRTP for a plain desk phone,
//     TransportSRTP for a citizen's softphone, TransportAsOffered to mirror.
//   - 183/200 with SDP: Answer; forward the result. Repeating Answer for the
//     same offer is fine (183 then 200); a different fork's answer replaces
//     the previous one (the last answer wins: forks share the b-side ports).
//   - re-INVITE/UPDATE from either side: Offer then Answer again, with that
//     side's tag. Ports stay; new m-lines get ports; hold (sendonly,
//     recvonly, inactive, c=0.0.0.0) switches to HoldTimeout; a changed
//     address drops that side's latch; a changed key re-keys.
//   - BYE, CANCEL, failure of the INVITE: Release. After OnTimeout the call
//     is already released (Release returns false) and the proxy sends BYE.
//
// After an error the SDP must not be forwarded as if anchored; Release still
// frees whatever the call holds. ErrUnsupported means the SDP cannot be
// anchored (DTLS-SRTP, a hostname, no usable key): forward it unanchored or
// answer 488.
//
// # SDP
//
// The rewriter is line based and keeps every line it does not own. It
// rewrites c= (keeping a c=0.0.0.0 hold), the m= port (port 0 stays 0),
// a=rtcp; replaces a=crypto with the relay's own keys; drops ICE attributes
// (the relay is the only candidate) and a=group:BUNDLE (each m-line has its
// own port). Transports: RTP/AVP, RTP/AVPF, RTP/SAVP, RTP/SAVPF, and udptl
// (T.38, relayed as plain datagrams). At most 16 m-lines.
//
// Every active m-line has on each side an even RTP port from the range; the
// odd port above is RTCP, bound only when rtcp-mux is not negotiated by both
// sides (with rtcp-mux everything uses the one port).
//
// # SRTP
//
// SDES (RFC 4568) with AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80 and _32,
// single key without MKI. The relay terminates SRTP on each leg: it decrypts
// with the key the endpoint sent and encrypts with a key it generated for
// that leg, so SRTP↔RTP is bridged, two SRTP legs are re-keyed, a plain leg
// never receives SRTP, and an SRTP leg never receives plain RTP (packets are
// dropped until keys are negotiated). Decryption has replay protection
// (64-packet window). The relay offers all three suites, GCM first; it
// answers an offerer with the offerer's first usable suite.
//
// # Latching (NAT) and the hijack guard
//
// Each relay socket sends to its endpoint's SDP address until it latches.
// The rule, per socket (RTP and RTCP separately):
//
//   - A packet from the current address is accepted; the first one latches.
//   - Before latching, a packet from another address is accepted, and
//     latches, only if its IP is the SDP IP or the signalling source IP
//     (LegOptions.Source) and it arrives within LatchWindow after an answer.
//     The port may differ: that is the NAT case.
//   - Once latched, another address is accepted, and re-latches, only from
//     the same IP with a different SSRC (the phone restarted its stream
//     behind the same NAT). Everything else is dropped and counted.
//   - On an SRTP leg a latch is committed only after the packet
//     authenticated, so a forged packet never moves the media.
//   - An offer or answer that changes the side's address or signalling
//     source starts over from its new SDP address.
//
// A host sharing the phone's public IP could still take the stream over by
// sending with a new SSRC: accepted, as the price of surviving NAT rebinding.
//
// # Quality
//
// Per leg: packets and bytes, loss from sequence gaps (RFC 3550 A.1/A.3),
// interarrival jitter (A.8), and the loss, jitter and round trip the
// endpoint reports in RTCP SR/RR. The call's R-factor and MOS come from the
// simplified E-model (R = 93.2 − Id − Ie_eff) on the worse direction, with
// loss the larger of what the relay saw and the receiver reported, and
// one-way delay = half of both hops' RTT + twice the jitter + 20 ms.
//
// Prometheus: centralino_media_packets_total, _bytes_total,
// _dropped_packets_total (summed from per-socket atomics at scrape time),
// centralino_media_sessions, _ports_allocated, _timeouts_total, and at
// release the histograms centralino_media_jitter_seconds, _loss_ratio (per
// leg) and _mos (per call).
//
// # Hot path
//
// GOMAXPROCS event loops (Linux epoll, level-triggered) serve the sockets;
// each call's sockets all belong to one loop, chosen round-robin. A loop
// takes the ready sockets from epoll_wait and reads one datagram from each
// with a raw non-blocking recvfrom, then relays it with one sendto from the
// other side's socket: no goroutine, stack or buffer per socket, no park and
// wake-up per packet, and the kernel's round-robin order among busy sockets,
// so overload delays every stream a little instead of some a lot. A full
// send buffer drops the packet (late audio is no better than lost audio).
// Nothing is allocated per packet: the loop's buffers, the RTP header read
// in place, SRTP decrypted in place, addresses as netip.AddrPort behind
// atomic pointers. A loop holds its mutex while it serves a batch, so once
// Release has removed a socket the loop never touches it again. An SRTP
// context's RTP state is used by one loop only; RTCP contexts, which
// rtcp-mux changes can reach from two sockets, are guarded by a mutex.
// Sockets carry DSCP EF. docs/benchmarks-media.md has the measurements.
//
// # In-kernel forwarding
//
// With Config.Kernel auto (the default, when the eBPF program loads and
// attaches) or on, a plain-RTP IPv4 direction moves into the kernel once
// userspace has relayed a packet of it with both sides latched: a TCX
// ingress program on every Ethernet and loopback interface looks the
// packet's destination (relay IP, port) up in a hash map, checks that it
// comes from the latched source with the latched SSRC, accounts it (RFC
// 3550 A.1 sequence, A.8 jitter, last arrival) in the map value, rewrites
// it to go from the other side's relay port to the other side's latched
// peer (IPv4 checksum afresh, UDP checksum 0, DSCP EF, TTL one lower when
// it leaves the machine by bpf_redirect_neigh) and never wakes the relay.
// Everything else goes up to the loops unchanged: other sources (latching
// and the hijack guard stay here), another SSRC, a sequence jump, RTCP, and
// payload types the kernel does not forward (telephone-event, which it
// counts and the loop decodes and relays). A negotiation, a re-latch, a
// jump or Release takes the direction back, merging the kernel's counters
// and receiver state into the socket's, so quality, metrics and the media
// timeout do not depend on which path carried the packets. SRTP legs and
// IPv6 stay in userspace. centralino_media_kernel_streams and
// _kernel_packets_total show the kernel's share.
package media

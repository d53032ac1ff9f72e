package media

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func crlf(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n" }

var inlineKey = regexp.MustCompile(`inline:[A-Za-z0-9+/=]+`)

// TestRewriteGolden runs one offer/answer per case and compares both
// rewritten SDPs; {A} and {B} stand for the relay's ports toward each side
// of m-line 0, {A1} and {B1} of m-line 1, and keys read KEY.
func TestRewriteGolden(t *testing.T) {
	cases := []struct {
		name               string
		opts               LegOptions
		offer, wantOffer   string
		answer, wantAnswer string
	}{{
		name: "ipv4 ice stripped",
		offer: crlf("v=0", "o=alice 1 1 IN IP4 192.168.1.10", "s=-", "c=IN IP4 192.168.1.10", "t=0 0",
			"a=ice-ufrag:abcd", "a=ice-pwd:secret", "a=group:BUNDLE 0",
			"m=audio 4000 RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
			"a=rtcp:4001 IN IP4 192.168.1.10", "a=candidate:1 1 UDP 2130706431 192.168.1.10 4000 typ host",
			"a=end-of-candidates", "a=mid:0", "a=sendrecv"),
		wantOffer: crlf("v=0", "o=alice 1 1 IN IP4 192.168.1.10", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio {B} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
			"a=rtcp:{B+1} IN IP4 127.0.0.1", "a=mid:0", "a=sendrecv"),
		answer: crlf("v=0", "o=bob 2 2 IN IP4 10.0.0.2", "s=-", "c=IN IP4 10.0.0.2", "t=0 0",
			"m=audio 5000 RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000", "a=remote-candidates:1 10.0.0.2 5000", "a=sendrecv"),
		wantAnswer: crlf("v=0", "o=bob 2 2 IN IP4 10.0.0.2", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio {A} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000", "a=sendrecv"),
	}, {
		name: "ipv6 rtcp-mux",
		offer: crlf("v=0", "o=- 1 1 IN IP6 2001:db8::1", "s=-", "t=0 0",
			"m=audio 4000 RTP/AVP 8", "c=IN IP6 2001:db8::1", "a=rtcp-mux"),
		wantOffer: crlf("v=0", "o=- 1 1 IN IP6 2001:db8::1", "s=-", "t=0 0",
			"m=audio {B} RTP/AVP 8", "c=IN IP6 ::1", "a=rtcp-mux"),
		answer: crlf("v=0", "o=- 1 1 IN IP6 2001:db8::2", "s=-", "c=IN IP6 2001:db8::2", "t=0 0",
			"m=audio 5000 RTP/AVP 8", "a=rtcp-mux"),
		wantAnswer: crlf("v=0", "o=- 1 1 IN IP6 2001:db8::2", "s=-", "c=IN IP6 ::1", "t=0 0",
			"m=audio {A} RTP/AVP 8", "a=rtcp-mux"),
	}, {
		name: "ipv6 phone to ipv4 phone: each side sees the relay, and the origin, in its family",
		opts: LegOptions{PeerFamily: FamilyIPv4},
		offer: crlf("v=0", "o=- 1 1 IN IP6 2001:db8::1", "s=-", "c=IN IP6 2001:db8::1", "t=0 0",
			"m=audio 4000 RTP/AVP 0"),
		wantOffer: crlf("v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio {B} RTP/AVP 0"),
		answer: crlf("v=0", "o=bob 2 2 IN IP4 10.0.0.2", "s=-", "c=IN IP4 10.0.0.2", "t=0 0",
			"m=audio 5000 RTP/AVP 0"),
		wantAnswer: crlf("v=0", "o=bob 2 2 IN IP6 ::1", "s=-", "c=IN IP6 ::1", "t=0 0",
			"m=audio {A} RTP/AVP 0"),
	}, {
		name: "two m-lines, video refused, port 0 stays 0, hold passes",
		offer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
			"m=audio 4000 RTP/AVP 0", "a=sendonly",
			"m=video 4002 RTP/AVPF 96", "a=rtpmap:96 H264/90000",
			"m=text 0 RTP/AVP 98"),
		wantOffer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio {B} RTP/AVP 0", "a=sendonly",
			"m=video {B1} RTP/AVPF 96", "a=rtpmap:96 H264/90000",
			"m=text 0 RTP/AVP 98"),
		answer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.2", "s=-", "c=IN IP4 10.0.0.2", "t=0 0",
			"m=audio 5000 RTP/AVP 0", "a=recvonly",
			"m=video 0 RTP/AVPF 96",
			"m=text 0 RTP/AVP 98"),
		wantAnswer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.2", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio {A} RTP/AVP 0", "a=recvonly",
			"m=video 0 RTP/AVPF 96",
			"m=text 0 RTP/AVP 98"),
	}, {
		name: "srtp to plain",
		opts: LegOptions{PeerTransport: TransportRTP},
		offer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
			"m=audio 4000 RTP/SAVP 0",
			"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20",
			"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"),
		wantOffer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio {B} RTP/AVP 0"),
		answer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.2", "s=-", "c=IN IP4 10.0.0.2", "t=0 0",
			"m=audio 5000 RTP/AVP 0"),
		wantAnswer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.2", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio {A} RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 KEY"),
	}, {
		name: "plain to srtp, c=0.0.0.0 hold kept",
		opts: LegOptions{PeerTransport: TransportSRTP},
		offer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
			"m=audio 4000 RTP/AVP 0", "a=ptime:20"),
		wantOffer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
			"m=audio {B} RTP/SAVP 0",
			"a=crypto:1 AEAD_AES_128_GCM KEY",
			"a=crypto:2 AES_CM_128_HMAC_SHA1_80 KEY",
			"a=crypto:3 AES_CM_128_HMAC_SHA1_32 KEY",
			"a=ptime:20"),
		answer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.2", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
			"m=audio 5000 RTP/SAVP 0",
			"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"),
		wantAnswer: crlf("v=0", "o=- 1 1 IN IP4 10.0.0.2", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
			"m=audio {A} RTP/AVP 0"),
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRelay(t, testConfig())
			gotOffer, err := r.Offer("call", "a", []byte(tc.offer), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			gotAnswer, err := r.Answer("call", "b", []byte(tc.answer), LegOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c := r.calls["call"]
			var pairs []string
			for i, st := range c.streams {
				if st == nil {
					continue
				}
				suffix := ""
				if i > 0 {
					suffix = fmt.Sprint(i)
				}
				a, b := st.ends[0].port, st.ends[1].port
				pairs = append(pairs, "{A"+suffix+"}", fmt.Sprint(a), "{B"+suffix+"}", fmt.Sprint(b),
					"{A"+suffix+"+1}", fmt.Sprint(a+1), "{B"+suffix+"+1}", fmt.Sprint(b+1))
			}
			ports := strings.NewReplacer(pairs...)
			for _, g := range []struct {
				got  []byte
				want string
			}{{gotOffer, tc.wantOffer}, {gotAnswer, tc.wantAnswer}} {
				got := inlineKey.ReplaceAllString(string(g.got), "KEY")
				if want := ports.Replace(g.want); got != want {
					t.Errorf("got\n%s\nwant\n%s", got, want)
				}
			}
		})
	}
}

func TestRewriteErrors(t *testing.T) {
	r := newTestRelay(t, testConfig())
	for _, tc := range []struct {
		name string
		sdp  string
		want error
	}{
		{"garbage", "hello", ErrBadSDP},
		{"no m-line", crlf("v=0", "c=IN IP4 10.0.0.1"), ErrBadSDP},
		{"no address", crlf("v=0", "m=audio 4000 RTP/AVP 0"), ErrBadSDP},
		{"hostname", crlf("v=0", "c=IN IP4 pbx.example.it", "m=audio 4000 RTP/AVP 0"), ErrUnsupported},
		{"dtls", crlf("v=0", "c=IN IP4 10.0.0.1", "m=audio 4000 UDP/TLS/RTP/SAVPF 111"), ErrUnsupported},
		{"savp without key", crlf("v=0", "c=IN IP4 10.0.0.1", "m=audio 4000 RTP/SAVP 0",
			"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:short"), ErrUnsupported},
		{"too many m-lines", "v=0\r\nc=IN IP4 10.0.0.1\r\n" + strings.Repeat("m=audio 4000 RTP/AVP 0\r\n", 17), ErrBadSDP},
	} {
		if _, err := r.Offer(tc.name, "a", []byte(tc.sdp), LegOptions{}); !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := r.Answer("nope", "b", audioSDP(lo4, 4000, "RTP/AVP"), LegOptions{}); !errors.Is(err, ErrUnknownCall) {
		t.Errorf("answer without call: %v", err)
	}
}

func TestParseCrypto(t *testing.T) {
	const key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key, true},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key + "|2^20", true},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key + "|2^20|1:4", false}, // MKI
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key + " UNENCRYPTED_SRTP", false},
		{"1 F8_128_HMAC_SHA1_80 inline:" + key, false},
		{"1 AEAD_AES_128_GCM inline:" + key, false}, // GCM keys are 28 bytes
		{"x AES_CM_128_HMAC_SHA1_80 inline:" + key, false},
	} {
		if _, ok := parseCrypto(tc.v); ok != tc.ok {
			t.Errorf("parseCrypto(%q) ok=%v, want %v", tc.v, ok, tc.ok)
		}
	}
}

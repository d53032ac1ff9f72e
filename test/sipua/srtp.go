package sipua

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// SRTPKey returns a fresh SDES inline key (AES_CM_128_HMAC_SHA1_80: 16 bytes
// of key and 14 of salt, base64).
func SRTPKey() string {
	key := make([]byte, 30)
	rand.Read(key)
	return base64.StdEncoding.EncodeToString(key)
}

// SRTPSDP is the phone's session description as a softphone offering SDES
// SRTP (RFC 4568) with the inline key.
func (p *Phone) SRTPSDP(inline string) []byte {
	port := p.RTP.LocalAddr().(*net.UDPAddr).Port
	return []byte(fmt.Sprintf("v=0\r\no=%s 1 1 %s\r\ns=-\r\nc=%s\r\nt=0 0\r\n"+
		"m=audio %d RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"+
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\na=sendrecv\r\n", p.User, p.sdpAddr(), p.sdpAddr(), port, inline))
}

// SRTPContext makes a pion SRTP context from an SDES inline key (key‖salt).
func SRTPContext(t testing.TB, inline string) *srtp.Context {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(inline)
	if err != nil || len(raw) != 30 {
		t.Fatalf("bad inline key %q", inline)
	}
	c, err := srtp.CreateContext(raw[:16], raw[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CryptoKey returns the AES_CM_128_HMAC_SHA1_80 inline key of an SDP.
func CryptoKey(t testing.TB, body []byte) string {
	t.Helper()
	for _, line := range strings.Split(string(body), "\r\n") {
		if strings.HasPrefix(line, "a=crypto:") && strings.Contains(line, "AES_CM_128_HMAC_SHA1_80") {
			_, key, _ := strings.Cut(line, "inline:")
			key, _, _ = strings.Cut(key, "|")
			return key
		}
	}
	t.Fatalf("no AES_CM_128_HMAC_SHA1_80 key in:\n%s", body)
	return ""
}

// SendSRTP encrypts an RTP packet with enc and sends it from conn to addr.
func SendSRTP(t testing.TB, enc *srtp.Context, conn *net.UDPConn, to *net.UDPAddr, seq uint16, payload []byte) {
	t.Helper()
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 0xabc}, Payload: payload}
	plain, err := pkt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	secret, err := enc.EncryptRTP(nil, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP(secret, to); err != nil {
		t.Fatal(err)
	}
}

// ReceiveSRTP waits up to 2 s for an SRTP packet on conn, decrypts it with
// dec and returns its payload; a packet dec cannot authenticate fails the test.
func ReceiveSRTP(t testing.TB, dec *srtp.Context, conn *net.UDPConn) []byte {
	t.Helper()
	buf := make([]byte, 1500)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no SRTP: %v", err)
	}
	out, err := dec.DecryptRTP(nil, buf[:n], nil)
	if err != nil {
		t.Fatalf("a packet the phone cannot decrypt: %v", err)
	}
	var pkt rtp.Packet
	if err := pkt.Unmarshal(out); err != nil {
		t.Fatal(err)
	}
	return pkt.Payload
}

// SendDigit sends DTMF digit event (0–9 for the digits, 10 "*", 11 "#") from
// conn to addr as RFC 4733 telephone-event (payload type pt): the end packet,
// three times as the RFC asks, at RTP timestamp ts.
func SendDigit(t testing.TB, conn *net.UDPConn, to *net.UDPAddr, pt uint8, seq uint16, ts uint32, event byte) {
	t.Helper()
	for i := range 3 {
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq + uint16(i), Timestamp: ts, SSRC: 0x1234},
			Payload: []byte{event, 0x80 | 10, 0x03, 0x20}} // end bit, volume 10, 800 samples
		buf, err := pkt.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDP(buf, to); err != nil {
			t.Fatal(err)
		}
	}
}

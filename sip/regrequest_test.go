package sip

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// REGISTERs as the phones of the network send them (sipp's bench scenario,
// baresip, linphone, a Yealink-style desk phone), and forms the registrar
// must read alike from either path.
var registerSamples = map[string]string{
	"sipp": "REGISTER sip:127.0.0.1:35060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:35061;branch=z9hG4bK-29330-6044-2\r\nFrom: <sip:u006044@example.test>;tag=29330r6044\r\nTo: <sip:u006044@example.test>\r\nCall-ID: 6044-29330@127.0.0.1\r\nCSeq: 2 REGISTER\r\nContact: <sip:u006044@127.0.0.1:35061>\r\n" +
		"Authorization: Digest username=\"u006044\",realm=\"centralino\",uri=\"sip:127.0.0.1:35060\",nonce=\"abcdef0123\",response=\"0123456789abcdef0123456789abcdef\",algorithm=MD5,cnonce=\"6b8b4567\",qop=auth,nc=00000001\r\nMax-Forwards: 70\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n",
	"baresip": "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK7e1ab12f;rport\r\nContact: <sip:8300101-0x55d5@127.0.0.1:40000>;expires=600\r\nMax-Forwards: 70\r\nTo: <sip:8300101@127.0.0.1>\r\nFrom: <sip:8300101@127.0.0.1>;tag=0a2fe2c1\r\nCall-ID: 3f0c8e5ed6a1b0c2\r\nCSeq: 21837 REGISTER\r\nUser-Agent: baresip v1.0.0 (x86_64/linux)\r\nAllow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER\r\nSupported: replaces\r\nContent-Length: 0\r\n\r\n",
	"linphone": "REGISTER sip:10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK.Hx8v1;rport\r\nFrom: <sip:8300102@10.0.0.1>;tag=aB1x\r\nTo: sip:8300102@10.0.0.1\r\nCSeq: 20 REGISTER\r\nCall-ID: kq3Jz\r\nMax-Forwards: 70\r\nSupported: replaces, outbound, gruu\r\nAccept: application/sdp\r\nAccept: text/plain\r\nExpires: 3600\r\n" +
		"Contact: <sip:8300102@192.168.1.20:5062;transport=udp>;+sip.instance=\"<urn:uuid:8f3a>\";+org.linphone.specs=\"lime\"\r\nUser-Agent: Linphone/5.2.0 (belle-sip/5.2.0)\r\nAuthorization: Digest realm=\"centralino\", nonce=\"n\", algorithm=SHA-256, username=\"8300102\", uri=\"sip:10.0.0.1\", response=\"r\", cnonce=\"c\", nc=00000002, qop=auth\r\nContent-Length: 0\r\n\r\n",
	"compact, two contacts": "REGISTER sip:test SIP/2.0\r\nv: SIP/2.0/UDP h.example.org:5070;branch=z9hG4bKz\r\nf: <sip:a@test>;tag=1\r\nt: \"A, B\" <sip:a@test>\r\ni: z\r\nCSeq: 2 REGISTER\r\nm: <sip:a@h:5070>;expires=60, <sip:a@h2>;expires=0\r\nl: 0\r\n\r\n",
	"unregister all":        "REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKb\r\nFrom: <sip:alice@test>;tag=2\r\nTo: <sip:alice@test>\r\nCall-ID: c2\r\nCSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\n\r\n",
	"query":                 "REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKq\r\nFrom: <sip:alice@test>;tag=2\r\nTo: <sip:alice@test>\r\nCall-ID: q\r\nCSeq: 3 REGISTER\r\n\r\n",
}

// Forms the scan leaves to sipgo, which reads each as well.
var registerSamplesForSipgo = map[string]string{
	"folded Contact": "REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKf\r\nFrom: <sip:alice@test>;tag=2\r\nTo: <sip:alice@test>\r\nCall-ID: f\r\nCSeq: 3 REGISTER\r\nContact:\r\n <sip:alice@h>\r\n\r\n",
	"TCP in the Via": "REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKt\r\nFrom: <sip:alice@test>;tag=2\r\nTo: <sip:alice@test>\r\nCall-ID: t\r\nCSeq: 3 REGISTER\r\n\r\n",
	"a body":         "REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKb\r\nFrom: <sip:alice@test>;tag=2\r\nTo: <sip:alice@test>\r\nCall-ID: b\r\nCSeq: 3 REGISTER\r\nContent-Length: 2\r\n\r\nhi",
	"spaced CSeq":    "REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKs\r\nFrom: <sip:alice@test>;tag=2\r\nTo: <sip:alice@test>\r\nCall-ID: s\r\nCSeq: 3\tREGISTER\r\n\r\n",
}

var registerSource = netip.MustParseAddrPort("127.0.0.1:40000")

// The scan reads the REGISTERs phones send exactly as the registrar reads
// them from sipgo's parse, and leaves the unusual forms to sipgo.
func TestScanRegisterReadsWhatSipgoReads(t *testing.T) {
	for name, msg := range registerSamples {
		scanned, ok := scanSample(t, msg)
		if !ok {
			t.Errorf("%s: left to sipgo", name)
			continue
		}
		if parsed, ok := parseSample(msg); !ok || !reflect.DeepEqual(scanned, parsed) {
			t.Errorf("%s: scanned\n%+v\nparsed (%v)\n%+v", name, scanned, ok, parsed)
		}
	}
	for name, msg := range registerSamplesForSipgo {
		if _, ok := scanSample(t, msg); ok {
			t.Errorf("%s: scanned, want it left to sipgo", name)
		}
		if _, ok := parseSample(msg); !ok {
			t.Errorf("%s: sipgo does not read it either", name)
		}
	}
	r, _ := scanSample(t, registerSamples["linphone"])
	if r.aor != "8300102" || r.cseq != 20 || !r.natted || len(r.contacts) != 1 || r.userAgent != "Linphone/5.2.0 (belle-sip/5.2.0)" || len(r.credentials) != 1 || r.expires != "3600" {
		t.Errorf("linphone: %+v", r)
	}
}

// FuzzScanRegister: whatever a datagram holds, a REGISTER the scan reads is
// read alike by sipgo's parse whenever sipgo reads it.
func FuzzScanRegister(f *testing.F) {
	for _, m := range registerSamples {
		f.Add([]byte(m))
	}
	for _, m := range registerSamplesForSipgo {
		f.Add([]byte(m))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var raw rawRequest
		if !raw.scan(data) {
			return
		}
		scanned, ok := scanRegister(&raw, data, registerSource)
		if !ok {
			return
		}
		if parsed, ok := parseSample(string(data)); ok && !reflect.DeepEqual(scanned, parsed) {
			t.Fatalf("scanned\n%+v\nparsed\n%+v", scanned, parsed)
		}
	})
}

func scanSample(t *testing.T, msg string) (registerRequest, bool) {
	var raw rawRequest
	if !raw.scan([]byte(msg)) {
		t.Fatalf("rawRequest cannot read %q", msg)
	}
	return scanRegister(&raw, []byte(msg), registerSource)
}

// parseSample reads msg as the registrar does after sipgo's parse.
func parseSample(msg string) (registerRequest, bool) {
	m, err := sip.ParseMessage([]byte(msg))
	req, ok := m.(*sip.Request)
	if err != nil || !ok || req.Via() == nil || req.Method != sip.REGISTER {
		return registerRequest{}, false
	}
	req.SetTransport("UDP")
	req.SetSource(registerSource.String())
	if validate(req) != nil {
		return registerRequest{}, false
	}
	return registerOf(req)
}

// BenchmarkReadRegister: what reading sipp's REGISTER costs the registrar,
// scanned and parsed by sipgo.
func BenchmarkReadRegister(b *testing.B) {
	msg := []byte(registerSamples["sipp"])
	for _, read := range []struct {
		name string
		read func(raw *rawRequest) bool
	}{
		{"scan", func(raw *rawRequest) bool { _, ok := scanRegister(raw, msg, registerSource); return ok }},
		{"sipgo", func(*rawRequest) bool { _, ok := parseSample(string(msg)); return ok }},
	} {
		b.Run(read.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var raw rawRequest
				if !raw.scan(msg) || !read.read(&raw) {
					b.Fatal("not read")
				}
			}
		})
	}
}

// The Contacts phones send are read without sipgo, as sipgo reads them.
func TestPlainContact(t *testing.T) {
	for _, v := range []string{
		"<sip:u006044@127.0.0.1:35061>",
		"<sip:8300101-0x55d5@127.0.0.1:40000>;expires=600",
		`<sip:8300102@192.168.1.20:5062;transport=udp>;+sip.instance="<urn:uuid:8f3a>";+org.linphone.specs="conference/1.0,lime"`,
		`"Alice" <sips:alice@phone.example.org;transport=tls>;expires=0;reg-id=1`,
		"*",
	} {
		c, ok := plainContact([]byte(v))
		if !ok {
			t.Errorf("%s: left to sipgo", v)
			continue
		}
		if want, ok := sipgoContact(v); !ok || c != want {
			t.Errorf("%s: %+v, sipgo %+v (%v)", v, c, want, ok)
		}
	}
}

// FuzzPlainContact: a Contact value plainContact reads, sipgo reads alike.
func FuzzPlainContact(f *testing.F) {
	f.Add("<sip:alice@h:5060;transport=udp;lr>;expires=60;q=0.5")
	f.Add(`"A" <sip:a@h>;+sip.instance="<urn:uuid:1>";expires=3600`)
	f.Add("*")
	f.Add(`<sips:a.b-c_d~e+f@h.example.org:65535;transport=tcp;ob>;reg-id=1;expires=1;Expires=2;expires=3;+sip.instance="<urn:x>"`)
	f.Fuzz(func(t *testing.T, v string) {
		c, ok := plainContact([]byte(v))
		if !ok {
			return
		}
		if want, ok := sipgoContact(v); !ok || c != want {
			t.Fatalf("%q: %+v, sipgo %+v (%v)", v, c, want, ok)
		}
	})
}

// sipgoContact is the one Contact sipgo reads in value.
func sipgoContact(value string) (regContact, bool) {
	hs, err := sipgoHeaders.ParseHeader(nil, []byte("Contact: "+value))
	if err != nil || len(hs) != 1 {
		return regContact{}, false
	}
	c, ok := hs[0].(*sip.ContactHeader)
	return contactOf(c), ok
}

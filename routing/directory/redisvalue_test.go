package directory

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// storedValue writes what encoding/json writes, for any binding.
func FuzzStoredValue(f *testing.F) {
	f.Add("mario", "sip:mario@192.0.2.10:5060;transport=udp", "192.0.2.10:5060", true, false, "udp", "napoli-1",
		"a84b4c76e66710@pc33", uint32(1), "baresip v1.0.0 (x86_64/linux)", int64(1795944140330361000), int32(0))
	f.Add("<&>", "\"quoted\"\\", "\x00\x1f\t\n\r\b\f", false, true, "ws", "\u2028\u2029", "\xff\xfe", uint32(4294967295), "", int64(-62135596800000000), int32(3600))
	f.Add("è", "ü€𝄞", "", false, false, "", "", "", uint32(0), "\x7f", int64(0), int32(-86399))
	f.Fuzz(func(t *testing.T, aor, contact, source string, flow, md5Only bool, transport, node, callID string, cseq uint32, ua string, ns int64, offset int32) {
		b := Binding{AOR: aor, Contact: contact, Source: source, Flow: flow, MD5Only: md5Only, Transport: transport,
			Node: node, CallID: callID, CSeq: cseq, UserAgent: ua, Expires: time.Unix(0, ns).In(time.FixedZone("", int(offset)))}
		got, err := storedValue(b)
		data, jerr := json.Marshal(b)
		if (err != nil) != (jerr != nil) {
			t.Fatalf("storedValue error %v, json.Marshal error %v", err, jerr)
		}
		if err != nil {
			return
		}
		if want := strconv.FormatInt(b.Expires.UnixMilli(), 10) + "|" + string(data); got != want {
			t.Fatalf("storedValue:\n%s\njson.Marshal:\n%s", got, want)
		}
	})
}

// A field added to Binding must be added to storedValue too; the fuzz test
// sets every field it knows, so it alone would miss an omitempty one.
func TestStoredValueKnowsEveryField(t *testing.T) {
	if n := reflect.TypeFor[Binding]().NumField(); n != 11 {
		t.Fatalf("Binding has %d fields, storedValue and FuzzStoredValue write 11: update both", n)
	}
}

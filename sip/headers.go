package sip

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// headered is a SIP message's header list.
type headered interface{ Headers() []sip.Header }

// firstHeader is m's first header named name, in any case. sipgo's
// GetHeader lowercases the name of every header it passes, an allocation for
// each name with a capital letter or a dash outside its short list (Expires,
// Authorization, User-Agent...): several per REGISTER.
func firstHeader(m headered, name string) sip.Header {
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			return h
		}
	}
	return nil
}

// allHeaders is every header of m named name, in any case, in order.
func allHeaders(m headered, name string) []sip.Header {
	var out []sip.Header
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			out = append(out, h)
		}
	}
	return out
}

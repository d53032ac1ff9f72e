package survey

import (
	"embed"
	"fmt"
)

// The prompts are raw G.711 µ-law, 8 kHz mono, made by prompts/generate.sh.
//
//go:embed prompts/*.ulaw
var promptFiles embed.FS

// prompt is one recording in both G.711 laws.
type prompt struct {
	name       string
	ulaw, alaw []byte
}

// prompts of the survey.
type prompts struct {
	question, reason, thanks, goodbye prompt
}

func loadPrompts() (*prompts, error) {
	p := &prompts{}
	for _, x := range []struct {
		to   *prompt
		name string
	}{{&p.question, "question"}, {&p.reason, "reason"}, {&p.thanks, "thanks"}, {&p.goodbye, "goodbye"}} {
		b, err := promptFiles.ReadFile("prompts/" + x.name + ".ulaw")
		if err != nil {
			return nil, fmt.Errorf("prompt %s: %w", x.name, err)
		}
		a := make([]byte, len(b))
		for i, u := range b {
			a[i] = linearToAlaw(ulawToLinear(u))
		}
		*x.to = prompt{name: x.name, ulaw: b, alaw: a}
	}
	return p, nil
}

// ulawToLinear decodes a G.711 µ-law sample.
func ulawToLinear(u byte) int16 {
	u = ^u
	t := (int(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

// linearToAlaw encodes a sample in G.711 A-law.
func linearToAlaw(s int16) byte {
	v := int(s) >> 3 // A-law works on 13 bits
	mask := byte(0xd5)
	if v < 0 {
		mask = 0x55
		v = -v - 1
	}
	seg := 0
	for end := 0x1f; seg < 8 && v > end; end = end<<1 | 1 {
		seg++
	}
	if seg >= 8 {
		return 0x7f ^ mask
	}
	a := byte(seg << 4)
	if seg < 2 {
		a |= byte(v>>1) & 0x0f
	} else {
		a |= byte(v>>seg) & 0x0f
	}
	return a ^ mask
}

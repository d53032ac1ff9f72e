package ticketcode

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// The two properties that make every code catch every single mistyped
// character and every adjacent swap, checked over the whole quasigroup.
func TestQuasigroupIsTotallyAntiSymmetric(t *testing.T) {
	for x := range 36 {
		row, col := map[int]bool{}, map[int]bool{}
		for y := range 36 {
			row[op(x, y)], col[op(y, x)] = true, true
		}
		if len(row) != 36 || len(col) != 36 {
			t.Fatalf("op is not a quasigroup: row or column %d repeats a value", x)
		}
	}
	for c := range 36 {
		for x := range 36 {
			for y := range 36 {
				if x != y && op(op(c, x), y) == op(op(c, y), x) {
					t.Fatalf("(%d∘%d)∘%d == (%d∘%d)∘%d: a swap would go unnoticed", c, x, y, c, y, x)
				}
			}
		}
	}
}

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// Every single substitution and every swap of adjacent letters or digits
// (dashes between them do not count) of many real codes is refused.
func TestCodeCatchesTypos(t *testing.T) {
	for _, year := range []int{2026, 2031} {
		for _, region := range []string{"CAM", "PUG", "NAZ", "SIC"} {
			for _, serial := range []int64{1, 9, 10, 99, 123, 4711, 99999, 123456, 999999, 1234567} {
				code := New(year, region, serial)
				if got, err := Parse(code); err != nil || got != code {
					t.Fatalf("Parse(%q) = %q, %v", code, got, err)
				}
				for _, typo := range typos(code) {
					if _, err := Parse(typo); err == nil {
						t.Fatalf("Parse(%q) accepted a typo of %q", typo, code)
					}
				}
			}
		}
	}
}

// typos returns every code one substitution or one adjacent swap from code.
func typos(code string) []string {
	var pos []int // of the letters and digits
	for i := range len(code) {
		if code[i] != '-' {
			pos = append(pos, i)
		}
	}
	var out []string
	for _, i := range pos {
		for _, c := range []byte(alphabet) {
			if c != code[i] {
				b := []byte(code)
				b[i] = c
				out = append(out, string(b))
			}
		}
	}
	for k := 0; k+1 < len(pos); k++ {
		i, j := pos[k], pos[k+1]
		if code[i] != code[j] {
			b := []byte(code)
			b[i], b[j] = b[j], b[i]
			out = append(out, string(b))
		}
	}
	return out
}

func TestNew(t *testing.T) {
	// Fixed, so that a change of the algorithm cannot go unnoticed: codes
	// already read out to citizens must stay valid.
	if got, want := New(2026, "CAM", 123), "LA-2026-CAM-000123-2"; got != want {
		t.Errorf("New = %q, want %q", got, want)
	}
	if got := New(2026, "NAZ", 1234567); !strings.HasPrefix(got, "LA-2026-NAZ-1234567-") {
		t.Errorf("New with a seven-digit serial = %q", got)
	}
}

func TestParse(t *testing.T) {
	code := New(2026, "CAM", 123)
	for _, in := range []string{code, strings.ToLower(code), strings.ReplaceAll(code, "-", ""), "la 2026 cam 000123 " + code[len(code)-1:]} {
		if got, err := Parse(in); err != nil || got != code {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, got, err, code)
		}
	}
	for _, in := range []string{"", "LA", "XX-2026-CAM-000123-U", "LA-26-CAM-000123-U", "LA-2026-C4M-000123-U", "LA-2026-CAM-00012-U", "LA-2026-CAM-000123-", "LA-2026-CAM-000123-!"} {
		if _, err := Parse(in); !errors.Is(err, ErrFormat) {
			t.Errorf("Parse(%q): err = %v, want ErrFormat", in, err)
		}
	}
	if _, err := Parse(code[:len(code)-1] + "0"); !errors.Is(err, ErrCheck) {
		t.Errorf("Parse of a wrong check character: err = %v, want ErrCheck", err)
	}
}

func TestFind(t *testing.T) {
	code := New(2026, "CAM", 123)
	bad := code[:len(code)-1] + "0"
	for text, want := range map[string]string{
		"POSTA CERTIFICATA: Re: Linea Amica - pratica " + code + ": aperta": code,
		"Re: pratica " + strings.ToLower(code) + ", documenti":              code,
		"sollecito " + bad + " e " + code:                                   code,
		"sollecito " + bad:                                                  "",
		"richiesta di informazioni":                                         "",
		"XLA-2026-CAM-000123-2":                                             "",
	} {
		if got, ok := Find(text); got != want || ok != (want != "") {
			t.Errorf("Find(%q) = %q, %v; want %q", text, got, ok, want)
		}
	}
}

func ExampleNew() {
	fmt.Println(New(2026, "CAM", 123))
	// Output: LA-2026-CAM-000123-2
}

// Package ticketcode makes and reads the codes of Linea Amica tickets. It is
// apart from the ticketing module so that other modules (pec reads codes in
// e-mail subjects) can check a code without linking the module.
package ticketcode

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// A ticket code reads "LA-2026-CAM-000123-2": the network, the year the
// ticket was opened (UTC), the region of the agency that opened it, a serial
// number of at least six digits, and a check character.
//
// The check character is Damm's algorithm over the 36 characters 0-9A-Z
// (worth 0..35): a totally anti-symmetric quasigroup of order 36 catches
// every single mistyped character and every swap of two adjacent characters,
// the check character included; dashes are ignored. ISO 7064 MOD 37,36 keeps
// the alphabet but misses some adjacent swaps (such as HI for IH after some
// prefixes), and MOD 37-2 catches them all at the price of a '*' check
// character, which is no good over the phone.
//
// The quasigroup is x∘y = a·x + y on GF(4) × Z9, with a = (ω, 2): a
// character worth v is the pair (v/9, v%9). It is a quasigroup because a is
// invertible, and totally anti-symmetric because a-1 = (ω+1, 1) is too.

// codePrefix starts every ticket code: Linea Amica.
const codePrefix = "LA"

// Errors of Parse.
var (
	ErrFormat = errors.New("ticket code: not of the form LA-2026-CAM-000123-2")
	ErrCheck  = errors.New("ticket code: check character does not match (mistyped?)")
)

// timesOmega multiplies by ω in GF(4), whose elements are bit pairs b1·ω + b0.
var timesOmega = [4]int{0, 2, 3, 1}

// op is the quasigroup operation.
func op(x, y int) int {
	return (timesOmega[x/9]^y/9)*9 + (2*(x%9)+y%9)%9
}

// value returns the worth of an upper-case letter or digit, or -1.
func value(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'Z':
		return int(c-'A') + 10
	}
	return -1
}

// interim runs the quasigroup over the letters and digits of s.
func interim(s string) int {
	x := 0
	for i := range len(s) {
		if v := value(s[i]); v >= 0 {
			x = op(x, v)
		}
	}
	return x
}

// checkChar returns the character that brings s's interim to zero.
func checkChar(s string) byte {
	x := interim(s)
	for d := range 36 {
		if op(x, d) == 0 {
			return "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[d]
		}
	}
	panic("ticketing: op is not a quasigroup")
}

// New returns the code of a ticket: region is three upper-case letters,
// serial is positive.
func New(year int, region string, serial int64) string {
	s := fmt.Sprintf("%s-%04d-%s-%06d-", codePrefix, year, region, serial)
	return s + string(checkChar(s))
}

// Parse returns code in its canonical form. It accepts lower case,
// spaces and missing dashes, as an operator may type a code read out on the
// phone, and returns ErrCheck for a mistyped one.
func Parse(code string) (string, error) {
	s := strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(code))
	// LA, year, region, serial, check.
	if len(s) < 2+4+3+6+1 || s[:2] != codePrefix || !digits(s[2:6]) || !letters(s[6:9]) || !digits(s[9:len(s)-1]) || value(s[len(s)-1]) < 0 {
		return "", ErrFormat
	}
	if interim(s) != 0 {
		return "", ErrCheck
	}
	return strings.Join([]string{s[:2], s[2:6], s[6:9], s[9 : len(s)-1], s[len(s)-1:]}, "-"), nil
}

func digits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func letters(s string) bool {
	return s != "" && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == ""
}

// inText matches what may be a code inside free text, such as a subject.
var inText = regexp.MustCompile(`(?i)\bLA[- ]?[0-9]{4}[- ]?[A-Z]{3}[- ]?[0-9]{6,}[- ]?[0-9A-Z]\b`)

// Find returns the first valid code in text, in canonical form; a code
// with a wrong check character is not one.
func Find(text string) (string, bool) {
	for _, m := range inText.FindAllString(text, -1) {
		if code, err := Parse(m); err == nil {
			return code, true
		}
	}
	return "", false
}

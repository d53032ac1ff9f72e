package ticketing

import "testing"

func TestMaskNumber(t *testing.T) {
	for in, want := range map[string]string{
		"+393331234567": "+39 333 ***4567",
		"3331234567":    "333 ***4567",
		"0812345678":    "081 ***5678",
		"8100101":       "***01",
		"+39112":        "+39 ***",
		"":              "***",
	} {
		if got := maskNumber(in); got != want {
			t.Errorf("maskNumber(%q) = %q, want %q", in, got, want)
		}
	}
}

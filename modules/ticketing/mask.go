package ticketing

import "strings"

// maskNumber hides most of a phone number for the logs, keeping enough to
// tell calls apart: "+393331234567" becomes "+39 333 ***4567".
func maskNumber(n string) string {
	cc := ""
	if strings.HasPrefix(n, "+") && len(n) > 3 {
		cc, n = n[:3]+" ", n[3:]
	}
	switch {
	case len(n) >= 9:
		return cc + n[:3] + " ***" + n[len(n)-4:]
	case len(n) > 4:
		return cc + "***" + n[len(n)-2:]
	default:
		return cc + "***"
	}
}

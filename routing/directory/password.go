package directory

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
)

// HA1 computes the digest HA1 = H(username:realm:password) (RFC 2617, RFC 8760)
// for "MD5" or "SHA-256". The switch stores these, never the password.
func HA1(algorithm, username, realm, password string) string {
	s := username + ":" + realm + ":" + password
	if algorithm == "SHA-256" {
		h := sha256.Sum256([]byte(s))
		return hex.EncodeToString(h[:])
	}
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// SetPassword fills both HA1s of u for the realm.
func (u *User) SetPassword(realm, password string) {
	u.HA1MD5 = HA1("MD5", u.Username, realm, password)
	u.HA1SHA256 = HA1("SHA-256", u.Username, realm, password)
}

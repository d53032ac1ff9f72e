package media

import (
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"

	"github.com/pion/srtp/v3"
)

// suite is an RFC 4568 crypto suite the relay speaks.
type suite struct {
	name    string
	profile srtp.ProtectionProfile
	keyLen  int // master key + master salt
}

// suites is also the order of preference in the relay's own offers: GCM is
// about four times cheaper, phones that do not know it skip the line.
var suites = []suite{
	{name: "AEAD_AES_128_GCM", profile: srtp.ProtectionProfileAeadAes128Gcm},
	{name: "AES_CM_128_HMAC_SHA1_80", profile: srtp.ProtectionProfileAes128CmHmacSha1_80},
	{name: "AES_CM_128_HMAC_SHA1_32", profile: srtp.ProtectionProfileAes128CmHmacSha1_32},
}

func init() {
	for i := range suites {
		k, _ := suites[i].profile.KeyLen()
		s, _ := suites[i].profile.SaltLen()
		suites[i].keyLen = k + s
	}
}

// replayWindow is the SRTP/SRTCP replay window on decrypt contexts (pion
// turns replay protection off unless asked).
const replayWindow = 64

// cryptoAttr is one usable a=crypto line.
type cryptoAttr struct {
	tag   int
	suite int // index in suites
	key   []byte
}

// parseCrypto reads "tag suite inline:key[|lifetime]". Lines with an MKI,
// several keys or session parameters are not usable (ok false), so the
// choice falls on another line.
func parseCrypto(v string) (cryptoAttr, bool) {
	f := strings.Fields(v)
	if len(f) != 3 {
		return cryptoAttr{}, false
	}
	tag, err := strconv.Atoi(f[0])
	if err != nil || tag < 0 || tag > 999999999 {
		return cryptoAttr{}, false
	}
	si := suiteIndex(f[1])
	inline, ok := strings.CutPrefix(f[2], "inline:")
	if si < 0 || !ok || strings.Contains(inline, ";") {
		return cryptoAttr{}, false
	}
	parts := strings.Split(inline, "|")
	if len(parts) > 2 {
		return cryptoAttr{}, false // MKI
	}
	key, err := base64.StdEncoding.DecodeString(parts[0])
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(parts[0])
	}
	if err != nil || len(key) != suites[si].keyLen {
		return cryptoAttr{}, false
	}
	return cryptoAttr{tag: tag, suite: si, key: key}, true
}

func suiteIndex(name string) int {
	for i, s := range suites {
		if s.name == name {
			return i
		}
	}
	return -1
}

// formatCrypto renders an a=crypto value.
func formatCrypto(tag, suite int, key []byte) string {
	return strconv.Itoa(tag) + " " + suites[suite].name + " inline:" + base64.StdEncoding.EncodeToString(key)
}

func newKey(suite int) []byte {
	k := make([]byte, suites[suite].keyLen)
	_, _ = rand.Read(k) // crypto/rand.Read never fails
	return k
}

// cipher holds the SRTP state of one direction of one leg. The zero value
// (no context) means plain RTP. One pion context serves both SRTP and SRTCP
// (it keeps their keys, rollover and replay state apart); all the sockets
// of a call are served by one loop, so it is used by one goroutine at a
// time. RTCP still takes mu, as it may reach a leg on its RTP or its RTCP
// socket while a re-INVITE toggles rtcp-mux.
type cipher struct {
	suite int
	key   []byte
	rtp   *srtp.Context
	mu    sync.Mutex
	rtcp  *srtp.Context // the same context as rtp
}

// plain is the cipher of a leg without SRTP.
var plain = &cipher{suite: -1}

// newCipher creates the context for key; decrypt contexts get replay
// protection.
func newCipher(suite int, key []byte, decrypt bool) (*cipher, error) {
	s := suites[suite]
	k, _ := s.profile.KeyLen()
	var opts []srtp.ContextOption
	if decrypt {
		opts = []srtp.ContextOption{srtp.SRTPReplayProtection(replayWindow), srtp.SRTCPReplayProtection(replayWindow)}
	}
	ctx, err := srtp.CreateContext(key[:k], key[k:], s.profile, opts...)
	if err != nil {
		return nil, err
	}
	return &cipher{suite: suite, key: key, rtp: ctx, rtcp: ctx}, nil
}

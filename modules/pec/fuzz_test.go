package pec

import (
	"crypto/x509"
	"errors"
	"testing"
)

// Whatever arrives in the mailbox, reading it never panics, and every
// refusal is a reason to quarantine.
func FuzzParsePEC(f *testing.F) {
	p := newPKI(f)
	trust := x509.NewCertPool()
	trust.AddCert(p.gestore.Cert) // a leaf as its own anchor: the seeds' signatures verify
	f.Add(pecMessage{tipo: "avvenuta-consegna", header: "avvenuta-consegna", subject: "CONSEGNA: x", refID: "<a@b>",
		mittente: testUser, recipients: []string{"c@d.it"}, consegna: "c@d.it", signer: p.gestore}.build(f))
	f.Add(pecMessage{tipo: "posta-certificata", header: "posta-certificata", subject: "POSTA CERTIFICATA: x",
		mittente: "c@d.it", recipients: []string{testUser}, signer: p.gestore,
		postacert: citizenMessage("c@d.it", "LA-2026-CAM-000123-2", "perché")}.build(f))
	f.Add(citizenMessage("c@d.it", "ciao", "testo"))
	f.Add([]byte("Subject: CONSEGNA: x\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		pm, err := parsePEC(raw, trust)
		var bm *badMail
		if err != nil && !errors.As(err, &bm) {
			t.Fatalf("an error that quarantines nothing: %v", err)
		}
		if err == nil && pm.Type == "posta-certificata" && pm.Original == nil {
			t.Fatal("posta-certificata without its message")
		}
		parseOriginal(raw)
		parseDatiCert(raw)
	})
}

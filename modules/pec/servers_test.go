package pec

import (
	"bytes"
	"cmp"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"mime/quotedprintable"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/test/mailserver"
	"github.com/smallstep/pkcs7"
)

// pki is the certificates of a test: a CA for the servers' TLS, a CA of
// PEC providers whose certificate signs the receipts, and a rogue CA's
// certificate for the same provider name, which nobody trusts.
type pki struct {
	server            mailserver.CA // for 127.0.0.1
	gestore, rogue    *mailserver.CA
	caFile, trustFile string
}

func newPKI(t testing.TB) *pki {
	tlsCA, providerCA := mailserver.NewCA(t, "Test TLS CA"), mailserver.NewCA(t, "Test CA dei gestori PEC")
	p := &pki{
		server:  *tlsCA.Issue(t, "localhost", "127.0.0.1", "localhost"),
		gestore: providerCA.Issue(t, "pec.gestore.it"),
		rogue:   mailserver.NewCA(t, "Rogue CA").Issue(t, "pec.gestore.it"),
	}
	dir := t.TempDir()
	p.caFile = tlsCA.WritePEM(t, dir, "ca.pem")
	p.trustFile = providerCA.WritePEM(t, dir, "gestori.pem")
	return p
}

const (
	testUser     = "linea.amica@pec.lineamica.gov.it"
	testPassword = "s3gret0-di-prova"
)

// pecMessage is a message of the PEC system built to the technical rules'
// structure: multipart/signed around a multipart/mixed of the provider's
// text (iso-8859-1, quoted-printable), daticert.xml and, for a
// posta-certificata, postacert.eml; signed by a provider's certificate.
type pecMessage struct {
	tipo       string // daticert tipo
	header     string // X-Ricevuta or X-Trasporto value; "" for none
	subject    string
	refID      string // the message a receipt is about
	mittente   string
	recipients []string
	consegna   string
	errore     string // postacert errore
	esteso     string // errore-esteso
	postacert  []byte
	signer     *mailserver.CA        // nil: not signed
	sigType    string                // default application/pkcs7-signature
	digest     asn1.ObjectIdentifier // default SHA-256
	tamper     bool                  // change the content after signing
}

// build returns the message as the provider delivers it.
func (m pecMessage) build(t testing.TB) []byte {
	t.Helper()
	var dest strings.Builder
	for _, r := range m.recipients {
		fmt.Fprintf(&dest, "    <destinatari tipo=\"certificato\">%s</destinatari>\n", r)
	}
	ref := ""
	if m.refID != "" {
		ref = "<msgid>" + xmlEscape(m.refID) + "</msgid>"
	}
	daticert := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="%s" errore="%s">
  <intestazione>
    <mittente>%s</mittente>
%s    <risposte>%s</risposte>
    <oggetto>%s</oggetto>
  </intestazione>
  <dati>
    <gestore-emittente>GESTORE DI PROVA S.p.A.</gestore-emittente>
    <data zona="+0100"><giorno>02/03/2026</giorno><ora>10:15:30</ora></data>
    <identificativo>opec21.20260302101530.12345.1.1@pec.gestore.it</identificativo>
    %s
    <ricevuta tipo="completa"/>
    <consegna>%s</consegna>
    <errore-esteso>%s</errore-esteso>
  </dati>
</postacert>
`, m.tipo, cmp.Or(m.errore, "nessuno"), m.mittente, dest.String(), m.mittente, xmlEscape(m.subject), ref, m.consegna, m.esteso)

	var qp bytes.Buffer
	w := quotedprintable.NewWriter(&qp)
	w.Write(latin1Bytes("Ricevuta di " + m.tipo + "\r\nIl messaggio è stato gestito dal sistema; perché ne resti traccia, la presente ricevuta è firmata.\r\n"))
	w.Close()

	var inner bytes.Buffer
	inner.WriteString("Content-Type: multipart/mixed; boundary=\"mixed-b\"\r\n\r\n")
	inner.WriteString("--mixed-b\r\nContent-Type: multipart/alternative; boundary=\"alt-b\"\r\n\r\n")
	inner.WriteString("--alt-b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	inner.Write(qp.Bytes())
	inner.WriteString("\r\n--alt-b\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html><body>Ricevuta</body></html>\r\n--alt-b--\r\n\r\n")
	inner.WriteString("--mixed-b\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\nContent-Disposition: inline; filename=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	inner.WriteString(wrap(base64.StdEncoding.EncodeToString([]byte(daticert))))
	if m.postacert != nil {
		inner.WriteString("\r\n--mixed-b\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n")
		inner.Write(m.postacert)
	}
	inner.WriteString("\r\n--mixed-b--\r\n")

	var out bytes.Buffer
	h := func(k, v string) { fmt.Fprintf(&out, "%s: %s\r\n", k, v) }
	h("Return-Path", "<posta-certificata@pec.gestore.it>")
	h("From", "posta-certificata@pec.gestore.it")
	h("To", testUser)
	h("Subject", m.subject)
	h("Date", "Mon, 02 Mar 2026 10:15:30 +0100")
	h("Message-ID", "<opec21.20260302101530."+fmt.Sprint(time.Now().UnixNano())+"@pec.gestore.it>")
	switch {
	case m.header == "":
	case m.tipo == "posta-certificata" || m.header == "errore":
		h("X-Trasporto", m.header)
	default:
		h("X-Ricevuta", m.header)
	}
	if m.refID != "" {
		h("X-Riferimento-Message-ID", m.refID)
	}
	h("MIME-Version", "1.0")
	if m.signer == nil {
		h("Content-Type", "multipart/mixed; boundary=\"mixed-b\"")
		out.WriteString("\r\n")
		_, body, _ := strings.Cut(inner.String(), "\r\n\r\n")
		out.WriteString(body)
		return out.Bytes()
	}
	signed := inner.Bytes()
	signed = signed[:len(signed)-2] // the CRLF before the delimiter is not signed
	sd, err := pkcs7.NewSignedData(signed)
	if err != nil {
		t.Fatal(err)
	}
	digest, micalg := pkcs7.OIDDigestAlgorithmSHA256, "sha-256"
	if m.digest != nil {
		digest, micalg = m.digest, "sha1"
	}
	sd.SetDigestAlgorithm(digest)
	if err := sd.AddSigner(m.signer.Cert, m.signer.Key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if m.tamper {
		signed = bytes.Replace(signed, []byte("GESTORE"), []byte("GESTORX"), 1) // inside base64: change the text instead
		signed = bytes.Replace(signed, []byte("Ricevuta di"), []byte("Ricevuta da"), 1)
	}
	sigType := cmp.Or(m.sigType, "application/pkcs7-signature")
	h("Content-Type", fmt.Sprintf("multipart/signed; protocol=\"%s\"; micalg=%s; boundary=\"signed-b\"", sigType, micalg))
	out.WriteString("\r\nThis is an S/MIME signed message\r\n--signed-b\r\n")
	out.Write(signed)
	out.WriteString("\r\n--signed-b\r\nContent-Type: " + sigType + "; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n")
	out.WriteString(wrap(base64.StdEncoding.EncodeToString(der)))
	out.WriteString("\r\n--signed-b--\r\n")
	return out.Bytes()
}

func wrap(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func latin1Bytes(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r))
	}
	return b
}

// citizenMessage is a message as a citizen's mail client writes it, in
// iso-8859-1 quoted-printable.
func citizenMessage(from, subject, text string) []byte {
	var qp bytes.Buffer
	w := quotedprintable.NewWriter(&qp)
	w.Write(latin1Bytes(text))
	w.Close()
	return []byte("From: " + from + "\r\nTo: " + testUser + "\r\nSubject: " + subject + "\r\nMessage-ID: <c." +
		fmt.Sprint(time.Now().UnixNano()) + "@pec.it>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp.String() + "\r\n")
}

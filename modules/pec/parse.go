package pec

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/smallstep/pkcs7"
)

// Reasons for quarantine, the label of centralino_pec_quarantined_total.
const (
	reasonMalformed    = "malformed"     // not a MIME message the PEC rules describe
	reasonNotPEC       = "not_pec"       // no header or subject of the PEC system
	reasonAnomaly      = "anomaly"       // busta di anomalia: not certified
	reasonUnsigned     = "unsigned"      // not multipart/signed with PKCS#7
	reasonBadSignature = "bad_signature" // signature wrong or not by a trusted provider
	reasonInconsistent = "inconsistent"  // the unsigned headers contradict the signed data
	reasonTooLarge     = "too_large"
)

// badMail is mail the module does not trust or cannot read.
type badMail struct {
	reason string
	err    error
}

func (e *badMail) Error() string { return e.reason + ": " + e.err.Error() }

func bad(reason, format string, a ...any) error {
	return &badMail{reason: reason, err: fmt.Errorf(format, a...)}
}

// pecMail is a message of the PEC system whose signature was verified.
type pecMail struct {
	Type     string // the daticert's tipo: accettazione, avvenuta-consegna, posta-certificata...
	Cert     *datiCert
	Time     time.Time // of the event certified
	RefID    string    // Message-ID of the message a receipt is about
	Original *original // the message carried by a posta-certificata
}

// original is a citizen's message, as carried in postacert.eml.
type original struct {
	Subject, MessageID, Text string
}

// datiCert is daticert.xml, the certification data of the PEC rules.
type datiCert struct {
	Tipo         string `xml:"tipo,attr"`
	Errore       string `xml:"errore,attr"`
	Intestazione struct {
		Mittente    string `xml:"mittente"`
		Destinatari []struct {
			Tipo    string `xml:"tipo,attr"` // certificato or esterno
			Address string `xml:",chardata"`
		} `xml:"destinatari"`
		Risposte string `xml:"risposte"`
		Oggetto  string `xml:"oggetto"`
	} `xml:"intestazione"`
	Dati struct {
		Gestore string `xml:"gestore-emittente"`
		Data    struct {
			Zona   string `xml:"zona,attr"`
			Giorno string `xml:"giorno"`
			Ora    string `xml:"ora"`
		} `xml:"data"`
		Identificativo string `xml:"identificativo"`
		MsgID          string `xml:"msgid"`
		Ricevuta       struct {
			Tipo string `xml:"tipo,attr"`
		} `xml:"ricevuta"`
		Consegna     string `xml:"consegna"`
		ErroreEsteso string `xml:"errore-esteso"`
	} `xml:"dati"`
}

// types are the daticert tipo values; the X-Ricevuta and X-Trasporto headers
// use the same words.
var types = []string{"accettazione", "non-accettazione", "presa-in-carico", "avvenuta-consegna",
	"errore-consegna", "preavviso-errore-consegna", "rilevazione-virus", "posta-certificata"}

// subjectTypes tell a message's type by its subject, longest prefix first.
var subjectTypes = []struct{ prefix, tipo string }{
	{"AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO", "preavviso-errore-consegna"},
	{"PREAVVISO DI MANCATA CONSEGNA", "preavviso-errore-consegna"},
	{"AVVISO DI MANCATA CONSEGNA", "errore-consegna"},
	{"AVVISO DI NON ACCETTAZIONE", "non-accettazione"},
	{"ACCETTAZIONE:", "accettazione"},
	{"PRESA IN CARICO:", "presa-in-carico"},
	{"CONSEGNA:", "avvenuta-consegna"},
	{"PROBLEMA DI SICUREZZA:", "rilevazione-virus"},
	{"POSTA CERTIFICATA:", "posta-certificata"},
	{"ANOMALIA MESSAGGIO:", "errore"},
}

var words = mime.WordDecoder{CharsetReader: charsetReader}

// classify tells the type of a message from its unsigned headers: the
// X-Ricevuta or X-Trasporto header (byHeader), or else the subject.
// net/mail compares header names case-insensitively and unfolds them.
func classify(h mail.Header) (tipo string, byHeader bool) {
	for _, k := range []string{"X-Ricevuta", "X-Trasporto"} {
		if v := strings.ToLower(strings.TrimSpace(h.Get(k))); v != "" {
			return v, true
		}
	}
	subject, err := words.DecodeHeader(h.Get("Subject"))
	if err != nil {
		subject = h.Get("Subject")
	}
	subject = strings.ToUpper(strings.TrimSpace(subject))
	for _, st := range subjectTypes {
		if strings.HasPrefix(subject, st.prefix) {
			return st.tipo, false
		}
	}
	return "", false
}

// parsePEC reads a message of the PEC system and verifies that a provider
// whose certificate chains to trust signed it. Every error is a *badMail.
func parsePEC(raw []byte, trust *x509.CertPool) (*pecMail, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(crlf(raw)))
	if err != nil {
		return nil, bad(reasonMalformed, "%v", err)
	}
	hint, byHeader := classify(msg.Header)
	switch hint {
	case "":
		return nil, bad(reasonNotPEC, "no X-Ricevuta, X-Trasporto or PEC subject")
	case "errore":
		return nil, bad(reasonAnomaly, "busta di anomalia (X-Trasporto: errore)")
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/signed" {
		return nil, bad(reasonUnsigned, "content type %q is not multipart/signed", msg.Header.Get("Content-Type"))
	}
	if !isSignatureType(params["protocol"]) {
		return nil, bad(reasonUnsigned, "signature protocol %q", params["protocol"])
	}
	body, err := io.ReadAll(msg.Body)
	if err != nil {
		return nil, bad(reasonMalformed, "%v", err)
	}
	signed, sig, err := splitSigned(body, params["boundary"])
	if err != nil {
		return nil, bad(reasonMalformed, "%v", err)
	}
	if err := verify(signed, sig, trust); err != nil {
		return nil, bad(reasonBadSignature, "%v", err)
	}

	inner, err := mail.ReadMessage(bytes.NewReader(signed))
	if err != nil {
		return nil, bad(reasonMalformed, "signed part: %v", err)
	}
	var p parts
	if err := p.walk(inner.Header, inner.Body, 0); err != nil {
		return nil, bad(reasonMalformed, "signed part: %v", err)
	}
	if p.daticert == nil {
		return nil, bad(reasonMalformed, "no daticert.xml")
	}
	cert, err := parseDatiCert(p.daticert)
	if err != nil {
		return nil, bad(reasonMalformed, "daticert.xml: %v", err)
	}
	if byHeader && hint != cert.Tipo {
		return nil, bad(reasonInconsistent, "the header says %s, the signed daticert.xml %s", hint, cert.Tipo)
	}
	pm := &pecMail{Type: cert.Tipo, Cert: cert, Time: cert.time()}
	if ref := strings.TrimSpace(msg.Header.Get("X-Riferimento-Message-ID")); ref != "" && cert.Dati.MsgID != "" && ref != cert.Dati.MsgID {
		return nil, bad(reasonInconsistent, "X-Riferimento-Message-ID %s, daticert msgid %s", ref, cert.Dati.MsgID)
	} else if pm.RefID = cert.Dati.MsgID; pm.RefID == "" {
		pm.RefID = ref
	}
	switch {
	case pm.Type != "posta-certificata":
		if pm.RefID == "" || len(pm.recipients()) == 0 {
			return nil, bad(reasonMalformed, "a receipt (%s) that names no message or no recipient", pm.Type)
		}
	case p.postacert == nil:
		return nil, bad(reasonMalformed, "posta-certificata without postacert.eml")
	case !bareAddress(cert.Intestazione.Mittente):
		return nil, bad(reasonMalformed, "daticert mittente is not an address")
	default:
		if pm.Original, err = parseOriginal(p.postacert); err != nil {
			return nil, bad(reasonMalformed, "postacert.eml: %v", err)
		}
	}
	return pm, nil
}

func isSignatureType(t string) bool {
	t = strings.ToLower(t)
	return t == "application/pkcs7-signature" || t == "application/x-pkcs7-signature"
}

// crlf makes every line end in CRLF, as the signed content was when signed
// (a mailbox may store bare LF).
func crlf(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) || bytes.Count(b, []byte("\r\n")) == bytes.Count(b, []byte("\n")) {
		return b
	}
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// splitSigned returns the two parts of a multipart/signed body: the signed
// part exactly as signed (its headers and body, without the CRLF before the
// next delimiter, RFC 1847) and the signature part.
func splitSigned(body []byte, boundary string) (signed, sig []byte, err error) {
	if boundary == "" {
		return nil, nil, errors.New("multipart/signed without boundary")
	}
	delim := []byte("--" + boundary)
	var parts [][]byte
	rest := body
	start := bytes.Index(rest, delim)
	if start < 0 || (start > 0 && !bytes.HasSuffix(rest[:start], []byte("\r\n"))) {
		return nil, nil, errors.New("no first boundary")
	}
	rest = rest[start+len(delim):]
	for {
		eol := bytes.Index(rest, []byte("\r\n"))
		if eol < 0 {
			return nil, nil, errors.New("unterminated boundary line")
		}
		rest = rest[eol+2:]
		next := bytes.Index(rest, append([]byte("\r\n"), delim...))
		if next < 0 {
			return nil, nil, errors.New("no closing boundary")
		}
		parts = append(parts, rest[:next])
		rest = rest[next+2+len(delim):]
		if bytes.HasPrefix(rest, []byte("--")) {
			break
		}
		if len(parts) > 2 {
			return nil, nil, errors.New("more than two parts")
		}
	}
	if len(parts) != 2 {
		return nil, nil, fmt.Errorf("%d parts, want the content and the signature", len(parts))
	}
	return parts[0], parts[1], nil
}

// verify checks the detached PKCS#7 signature sigPart over signed, and
// that the signer's certificate chains to trust. SHA-1 and SHA-256 digests
// are both in use among providers.
func verify(signed, sigPart []byte, trust *x509.CertPool) error {
	part, err := mail.ReadMessage(bytes.NewReader(sigPart))
	if err != nil {
		return fmt.Errorf("signature part: %v", err)
	}
	if mt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); !isSignatureType(mt) {
		return fmt.Errorf("signature part is %q", mt)
	}
	der, err := io.ReadAll(io.LimitReader(decode(part.Header, part.Body), 1<<20))
	if err != nil {
		return fmt.Errorf("signature part: %v", err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return err
	}
	if len(p7.Content) > 0 {
		return errors.New("signature is not detached")
	}
	p7.Content = signed
	return p7.VerifyWithChain(trust)
}

// header is what a message and a MIME part have in common.
type header interface{ Get(string) string }

// decode undoes a part's Content-Transfer-Encoding.
func decode(h header, body io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, body) // skips line breaks
	case "quoted-printable":
		return quotedprintable.NewReader(body)
	}
	return body
}

// maxPart bounds what is read of one decoded part.
const maxPart = 32 << 20

// parts are what the module reads in the signed content of a PEC message
// or in a citizen's message: the first plain text, daticert.xml and
// postacert.eml.
type parts struct {
	text                string
	hasText             bool
	daticert, postacert []byte
}

func (p *parts) walk(h header, body io.Reader, depth int) error {
	ct := h.Get("Content-Type")
	if ct == "" {
		ct = "text/plain; charset=us-ascii"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return fmt.Errorf("content type %q: %v", ct, err)
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		if depth > 8 {
			return errors.New("multiparts nested too deep")
		}
		r := multipart.NewReader(body, params["boundary"])
		for {
			part, err := r.NextRawPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if err := p.walk(part.Header, part, depth+1); err != nil {
				return err
			}
		}
	case mt == "message/rfc822":
		if p.postacert == nil {
			p.postacert, err = io.ReadAll(io.LimitReader(decode(h, body), maxPart))
		}
	case strings.EqualFold(partName(h, params), "daticert.xml"):
		p.daticert, err = io.ReadAll(io.LimitReader(decode(h, body), maxPart))
	case mt == "text/plain" && !p.hasText:
		var b []byte
		b, err = io.ReadAll(io.LimitReader(decode(h, body), maxPart))
		p.text, p.hasText = toUTF8(b, params["charset"]), true
	}
	return err
}

// partName is the file name of a part: Content-Disposition's filename or
// Content-Type's name.
func partName(h header, ctParams map[string]string) string {
	if _, dp, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil && dp["filename"] != "" {
		return dp["filename"]
	}
	return ctParams["name"]
}

// toUTF8 decodes text in the charsets PEC mail comes in: UTF-8, ASCII and
// ISO-8859-1 (also for bytes that are not valid in the charset declared).
func toUTF8(b []byte, charset string) string {
	switch strings.ToLower(charset) {
	case "", "utf-8", "utf8", "us-ascii":
		if utf8.Valid(b) {
			return string(b)
		}
	}
	return latin1(b)
}

func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// charsetReader reads the 8-bit charsets of Italian mail for mime and xml.
func charsetReader(charset string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "iso-8859-1", "iso8859-1", "latin1", "iso-8859-15", "windows-1252":
		b, err := io.ReadAll(io.LimitReader(in, maxPart))
		return strings.NewReader(latin1(b)), err
	}
	return nil, fmt.Errorf("charset %q", charset)
}

func parseDatiCert(b []byte) (*datiCert, error) {
	var c datiCert
	d := xml.NewDecoder(bytes.NewReader(b))
	d.CharsetReader = charsetReader
	d.Strict = false // providers emit stray text; the fields read are checked below
	if err := d.Decode(&c); err != nil {
		return nil, err
	}
	c.Tipo = strings.TrimSpace(c.Tipo)
	known := false
	for _, t := range types {
		known = known || t == c.Tipo
	}
	if !known {
		return nil, fmt.Errorf("postacert tipo %q", c.Tipo)
	}
	c.Dati.MsgID = strings.TrimSpace(c.Dati.MsgID)
	c.Dati.Consegna = strings.TrimSpace(c.Dati.Consegna)
	c.Dati.ErroreEsteso = strings.TrimSpace(c.Dati.ErroreEsteso)
	c.Intestazione.Mittente = strings.TrimSpace(c.Intestazione.Mittente)
	for i := range c.Intestazione.Destinatari {
		c.Intestazione.Destinatari[i].Address = strings.TrimSpace(c.Intestazione.Destinatari[i].Address)
	}
	return &c, nil
}

// time is when the provider certified the event, or the zero time.
func (c *datiCert) time() time.Time {
	d := c.Dati.Data
	t, err := time.Parse("02/01/2006 15:04:05 -0700", strings.TrimSpace(d.Giorno)+" "+strings.TrimSpace(d.Ora)+" "+strings.TrimSpace(d.Zona))
	if err != nil {
		return time.Time{}
	}
	return t
}

// recipients are those a receipt speaks for: every recipient for the
// sender's provider's receipts, the one delivered to (consegna) for the
// others.
func (pm *pecMail) recipients() []string {
	var all []string
	for _, d := range pm.Cert.Intestazione.Destinatari {
		if d.Address != "" {
			all = append(all, d.Address)
		}
	}
	switch pm.Type {
	case "accettazione", "non-accettazione", "presa-in-carico":
		return all
	}
	if pm.Cert.Dati.Consegna != "" {
		return []string{pm.Cert.Dati.Consegna}
	}
	return all
}

func parseOriginal(raw []byte) (*original, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(crlf(raw)))
	if err != nil {
		return nil, err
	}
	subject, err := words.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		subject = msg.Header.Get("Subject")
	}
	var p parts
	if err := p.walk(msg.Header, msg.Body, 0); err != nil {
		return nil, err
	}
	return &original{Subject: subject, MessageID: strings.TrimSpace(msg.Header.Get("Message-ID")), Text: p.text}, nil
}

package pec

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime/quotedprintable"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/smallstep/pkcs7"
)

// The test's public key infrastructure: a CA for the servers' TLS, a CA of
// PEC providers whose certificate signs the receipts, and a rogue CA that
// nobody trusts.

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, name string) *issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &issuer{cert: cert, key: key}
}

var serial int64 = 100

// issue makes a leaf certificate: for a TLS server if hosts are given, for
// signing mail otherwise.
func (ca *issuer) issue(t *testing.T, cn string, hosts ...string) *issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
		tmpl.EmailAddresses = []string{"posta-certificata@" + cn}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &issuer{cert: cert, key: key}
}

func (i *issuer) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{i.cert.Raw}, PrivateKey: i.key, Leaf: i.cert}
}

// writePEM writes the certificate to a file in dir and returns its path.
func (i *issuer) writePEM(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pki is every certificate of a test.
type pki struct {
	tlsCA, providerCA, rogueCA *issuer
	server                     tls.Certificate // for 127.0.0.1
	gestore, rogue             *issuer         // sign receipts
	caFile, trustFile          string
}

func newPKI(t *testing.T) *pki {
	p := &pki{tlsCA: newCA(t, "Test TLS CA"), providerCA: newCA(t, "Test CA dei gestori PEC"), rogueCA: newCA(t, "Rogue CA")}
	p.server = p.tlsCA.issue(t, "localhost", "127.0.0.1", "localhost").tlsCert()
	p.gestore = p.providerCA.issue(t, "pec.gestore.it")
	p.rogue = p.rogueCA.issue(t, "pec.gestore.it")
	dir := t.TempDir()
	p.caFile = p.tlsCA.writePEM(t, dir, "ca.pem")
	p.trustFile = p.providerCA.writePEM(t, dir, "gestori.pem")
	return p
}

// smtpServer is the provider's submission server: STARTTLS, AUTH PLAIN,
// and a record of what it was given. It can be down (not listening) or
// answer 451 to a number of attempts.
type smtpServer struct {
	t    *testing.T
	addr string
	tls  *tls.Config

	mu       sync.Mutex
	srv      *smtp.Server
	got      []received
	failNext int // attempts still to answer 451
	attempts int
}

type received struct {
	from string
	to   []string
	data []byte
}

const (
	testUser     = "linea.amica@pec.lineamica.gov.it"
	testPassword = "s3gret0-di-prova"
)

func startSMTP(t *testing.T, p *pki) *smtpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{t: t, addr: ln.Addr().String(), tls: &tls.Config{Certificates: []tls.Certificate{p.server}}}
	s.serve(ln)
	t.Cleanup(s.down)
	return s
}

func (s *smtpServer) serve(ln net.Listener) {
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &smtpSession{s: s}, nil }))
	srv.Domain, srv.TLSConfig, srv.MaxMessageBytes = "localhost", s.tls, 1<<20
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = nopLogger{}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(ln)
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

// down stops listening: the provider is unreachable.
func (s *smtpServer) down() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// up listens again on the same address.
func (s *smtpServer) up() {
	s.t.Helper()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.serve(ln)
}

func (s *smtpServer) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

type smtpSession struct {
	s    *smtpServer
	auth bool
	from string
	to   []string
}

func (ss *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != testUser || pass != testPassword {
			return errors.New("invalid credentials")
		}
		ss.auth = true
		return nil
	}), nil
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if !ss.auth {
		return smtp.ErrAuthRequired
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.s.attempts++
	if ss.s.failNext > 0 {
		ss.s.failNext--
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "servizio temporaneamente non disponibile"}
	}
	ss.from = from
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.got = append(ss.s.got, received{from: ss.from, to: ss.to, data: b})
	ss.s.mu.Unlock()
	return nil
}

func (ss *smtpSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *smtpSession) Logout() error { return nil }

// imapServer is the provider's IMAP server over implicit TLS, holding the
// mailbox the receipts arrive in.
type imapServer struct {
	addr string
	user *imapmemserver.User
}

func startIMAP(t *testing.T, p *pki) *imapServer {
	t.Helper()
	mem := imapmemserver.New()
	user := imapmemserver.NewUser(testUser, testPassword)
	if err := user.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(user)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:   imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		Logger: nopLogger{},
	})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.server}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &imapServer{addr: ln.Addr().String(), user: user}
}

// deliver puts a message in the INBOX, as the provider does.
func (s *imapServer) deliver(t *testing.T, raw []byte) {
	t.Helper()
	if _, err := s.user.Append("INBOX", bytes.NewReader(raw), &imap.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
}

// count returns the number of messages in a folder (0 if it does not exist).
func (s *imapServer) count(folder string) int {
	st, err := s.user.Status(folder, &imap.StatusOptions{NumMessages: true})
	if err != nil {
		return 0
	}
	return int(*st.NumMessages)
}

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
	errore     string
	postacert  []byte
	signer     *issuer               // nil: not signed
	sigType    string                // default application/pkcs7-signature
	digest     asn1.ObjectIdentifier // default SHA-256
	tamper     bool                  // change the content after signing
}

// build returns the message as the provider delivers it.
func (m pecMessage) build(t *testing.T) []byte {
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
  </dati>
</postacert>
`, m.tipo, cmp.Or(m.errore, "nessuno"), m.mittente, dest.String(), m.mittente, xmlEscape(m.subject), ref, m.consegna)

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
	if err := sd.AddSigner(m.signer.cert, m.signer.key, pkcs7.SignerInfoConfig{}); err != nil {
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

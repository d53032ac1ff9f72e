// Package mailserver starts, inside a test, the servers of a mail provider
// on loopback: an SMTP submission server with STARTTLS and AUTH PLAIN that
// records what it is given and can be made to fail, and an IMAP server over
// TLS holding one user's mailboxes. CA makes the certificates, for the
// servers' TLS and for signing mail.
package mailserver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// CA is a certificate and its key: an authority made by NewCA, or a leaf it
// issued.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

var serial atomic.Int64

// NewCA makes a self-signed authority, valid for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	return create(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil)
}

// Issue makes a leaf certificate: for a TLS server if hosts (names or IP
// addresses) are given, for signing the mail of posta-certificata@cn
// otherwise.
func (ca *CA) Issue(t testing.TB, cn string, hosts ...string) *CA {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature}
	if len(hosts) == 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
		tmpl.EmailAddresses = []string{"posta-certificata@" + cn}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return create(t, tmpl, ca)
}

func create(t testing.TB, tmpl *x509.Certificate, parent *CA) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key}
}

// TLSCert is the certificate for a tls.Config.
func (c *CA) TLSCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// WritePEM writes the certificate to a new file in dir and returns its path.
func (c *CA) WritePEM(t testing.TB, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Message is what the SMTP server was given.
type Message struct {
	From string   // MAIL FROM
	To   []string // RCPT TO
	Data []byte
}

// SMTP is a submission server: TLS as its Mode says, AUTH PLAIN required,
// messages recorded. It can be down (not listening) or
// answer 451 to MAIL.
type SMTP struct {
	Addr string

	t          testing.TB
	mode       Mode
	tls        *tls.Config
	user, pass string

	mu       sync.Mutex
	srv      *smtp.Server
	got      []Message
	failNext int
	auths    int // credentials received
}

// Mode is how an SMTP server does TLS.
type Mode int

const (
	STARTTLS    Mode = iota // offered on the plain connection (port 587)
	ImplicitTLS             // from the first byte (port 465)
	NoTLS                   // never; credentials are taken in clear (and counted)
)

// StartSMTP starts a server on loopback with the TLS certificate cert,
// accepting the one user; it stops with the test.
func StartSMTP(t testing.TB, mode Mode, cert tls.Certificate, user, pass string) *SMTP {
	t.Helper()
	s := &SMTP{t: t, mode: mode, tls: &tls.Config{Certificates: []tls.Certificate{cert}}, user: user, pass: pass}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(s.Down)
	return s
}

func (s *SMTP) serve(ln net.Listener) {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &smtpSession{s: s}, nil }))
	srv.Domain, srv.MaxMessageBytes = "localhost", 1<<20
	switch s.mode {
	case STARTTLS:
		srv.TLSConfig = s.tls
	case ImplicitTLS:
		ln = tls.NewListener(ln, s.tls)
	case NoTLS:
		srv.AllowInsecureAuth = true // to catch a client that would send a password in clear
	}
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

// Down stops listening: the provider is unreachable.
func (s *SMTP) Down() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Up listens again on the same address.
func (s *SMTP) Up() {
	s.t.Helper()
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.serve(ln)
}

// FailNext makes the server answer 451 (a temporary failure) to the next n
// MAIL commands.
func (s *SMTP) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
}

// Auths returns how many times credentials were received.
func (s *SMTP) Auths() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.auths
}

// Messages returns the messages received so far.
func (s *SMTP) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.got...)
}

type smtpSession struct {
	s    *SMTP
	auth bool
	from string
	to   []string
}

func (ss *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		ss.s.mu.Lock()
		ss.s.auths++
		ss.s.mu.Unlock()
		if user != ss.s.user || pass != ss.s.pass {
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
	ss.s.got = append(ss.s.got, Message{From: ss.from, To: ss.to, Data: b})
	ss.s.mu.Unlock()
	return nil
}

func (ss *smtpSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *smtpSession) Logout() error { return nil }

// IMAP is an IMAP4rev2 server with one user, whose INBOX exists, doing TLS
// as its Mode says (STARTTLS or ImplicitTLS).
type IMAP struct {
	Addr string
	user *imapmemserver.User
}

// StartIMAP starts a server on loopback; it stops with the test.
func StartIMAP(t testing.TB, mode Mode, cert tls.Certificate, user, pass string) *IMAP {
	t.Helper()
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(user, pass)
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	conf := &tls.Config{Certificates: []tls.Certificate{cert}}
	opts := &imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:   imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		Logger: nopLogger{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case STARTTLS:
		opts.TLSConfig = conf
	case ImplicitTLS:
		ln = tls.NewListener(ln, conf)
	default:
		t.Fatal("mailserver: an IMAP server does TLS")
	}
	srv := imapserver.New(opts)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &IMAP{Addr: ln.Addr().String(), user: u}
}

// Deliver puts a message in the INBOX, as the provider does.
func (s *IMAP) Deliver(t testing.TB, raw []byte) {
	t.Helper()
	if _, err := s.user.Append("INBOX", bytes.NewReader(raw), &imap.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Count returns the number of messages in a folder, 0 if there is none.
func (s *IMAP) Count(folder string) int {
	st, err := s.user.Status(folder, &imap.StatusOptions{NumMessages: true})
	if err != nil {
		return 0
	}
	return int(*st.NumMessages)
}

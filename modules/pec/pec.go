// Package pec is the module that writes to citizens by certified e-mail
// (PEC, Posta Elettronica Certificata) and reads the provider's receipts
// back: when a ticket whose citizen gave a PEC address is opened or changes
// status, it submits an Italian message to the agency's PEC provider from a
// persisted outbox; it reads the mailbox over IMAP, verifies the provider's
// S/MIME signature on every receipt, keeps the signed message as evidence
// and tells ticketing what was accepted and delivered, and which certified
// messages citizens sent. See docs/pec.md.
package pec

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lineamica/centralino/modules"
)

func init() {
	modules.Register(modules.Info{Name: "pec", New: func() modules.Module { return new(PEC) }})
}

// Options are the module's options in the configuration.
type Options struct {
	// The provider's submission server (host:port) and how TLS starts:
	// "starttls" (port 587) or "tls" (implicit, port 465).
	SMTPAddr string `yaml:"smtp_addr"`
	SMTPTLS  string `yaml:"smtp_tls"`
	// The provider's IMAP server, where the receipts arrive: "tls"
	// (port 993) or "starttls" (port 143). No address: receipts are not read.
	IMAPAddr string `yaml:"imap_addr"`
	IMAPTLS  string `yaml:"imap_tls"`
	// The mailbox's credentials, for both. The password is never logged.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// From is the mailbox's address: the From header and the envelope
	// sender, which PEC providers require to be the same.
	From string `yaml:"from"`
	// CAFile holds the roots the provider's TLS certificates are checked
	// against; "" uses the system's.
	CAFile string `yaml:"ca_file"`
	// TrustFile holds the certificates of the authorities that sign the
	// PEC providers' certificates: a receipt is trusted only if its
	// signature chains to one of them. Required with imap_addr.
	TrustFile string `yaml:"trust_file"`
	// Mailbox is the IMAP folder the receipts arrive in; malformed or
	// untrusted mail is moved to QuarantineFolder ("" leaves it there; it is
	// kept in the module's store either way).
	Mailbox          string        `yaml:"mailbox"`
	QuarantineFolder string        `yaml:"quarantine_folder"`
	PollInterval     time.Duration `yaml:"poll_interval"`
	// SizeLimit bounds a message times its recipients, as PEC providers
	// do (30 MB by law), and the mail read from the mailbox.
	SizeLimit int64 `yaml:"size_limit"`
	// Agency is the IPA code of the agency the mailbox belongs to, given
	// to the tickets that citizens' messages open ("" lets ticketing choose).
	Agency string `yaml:"agency"`
	// RatingURL, if set, puts the link <rating_url>/rate/<code> to the
	// web rating in the messages of solved and closed tickets.
	RatingURL string `yaml:"rating_url"`
	// ReceiptType is the delivery receipt asked for (X-TipoRicevuta):
	// completa, breve or sintetica.
	ReceiptType string `yaml:"receipt_type"`
	// Notify lists the statuses whose reaching is worth a message; the
	// opening of a ticket and a new address always are.
	Notify []string `yaml:"notify"`
	// A message the provider could not take is tried again after
	// RetryMin, doubling up to RetryMax.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
}

var defaults = Options{
	SMTPTLS:      "starttls",
	IMAPTLS:      "tls",
	Mailbox:      "INBOX",
	PollInterval: time.Minute,
	SizeLimit:    30 << 20,
	ReceiptType:  "completa",
	Notify:       []string{"aperto", "in_lavorazione", "trasferito", "risolto", "chiuso"},
	RetryMin:     30 * time.Second,
	RetryMax:     30 * time.Minute,
}

// validate checks the options and loads the files they name.
func (o *Options) validate() (tlsRoots, trust *x509.CertPool, err error) {
	opt := func(name, format string, a ...any) error {
		return fmt.Errorf("option %q: %s", name, fmt.Sprintf(format, a...))
	}
	switch {
	case !validHostPort(o.SMTPAddr):
		return nil, nil, opt("smtp_addr", "%q is not host:port", o.SMTPAddr)
	case !slices.Contains([]string{"starttls", "tls"}, o.SMTPTLS):
		return nil, nil, opt("smtp_tls", "%q is not starttls or tls", o.SMTPTLS)
	case o.IMAPAddr != "" && !validHostPort(o.IMAPAddr):
		return nil, nil, opt("imap_addr", "%q is not host:port", o.IMAPAddr)
	case !slices.Contains([]string{"starttls", "tls"}, o.IMAPTLS):
		return nil, nil, opt("imap_tls", "%q is not starttls or tls", o.IMAPTLS)
	case o.Username == "":
		return nil, nil, opt("username", "required: the mailbox's")
	case o.Password == "":
		return nil, nil, opt("password", "required: the mailbox's")
	case !bareAddress(o.From):
		return nil, nil, opt("from", "%q is not an e-mail address", o.From)
	case o.IMAPAddr != "" && o.TrustFile == "":
		return nil, nil, opt("trust_file", "required to read receipts (imap_addr is set)")
	case o.Mailbox == "":
		return nil, nil, opt("mailbox", "empty")
	case o.PollInterval < 10*time.Millisecond:
		return nil, nil, opt("poll_interval", "%v is too short", o.PollInterval)
	case o.SizeLimit < 64<<10:
		return nil, nil, opt("size_limit", "%d bytes is less than 64 KiB", o.SizeLimit)
	case !slices.Contains([]string{"completa", "breve", "sintetica"}, o.ReceiptType):
		return nil, nil, opt("receipt_type", "%q is not completa, breve or sintetica", o.ReceiptType)
	case slices.ContainsFunc(o.Notify, func(s string) bool { _, ok := statusText[s]; return !ok }):
		return nil, nil, opt("notify", "%v: the statuses are aperto, in_lavorazione, trasferito, risolto, chiuso", o.Notify)
	case o.RetryMin <= 0 || o.RetryMax < o.RetryMin:
		return nil, nil, opt("retry_max", "must be at least retry_min, which must be positive")
	}
	if o.RatingURL != "" {
		u, err := url.Parse(o.RatingURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, nil, opt("rating_url", "%q is not an http(s) URL", o.RatingURL)
		}
		o.RatingURL = strings.TrimSuffix(o.RatingURL, "/")
	}
	if o.CAFile != "" {
		if tlsRoots, err = loadPool(o.CAFile); err != nil {
			return nil, nil, opt("ca_file", "%v", err)
		}
	}
	if o.TrustFile != "" {
		if trust, err = loadPool(o.TrustFile); err != nil {
			return nil, nil, opt("trust_file", "%v", err)
		}
	}
	return tlsRoots, trust, nil
}

func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && host != "" && port != ""
}

// bareAddress accepts an address without a display name.
func bareAddress(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}

// PEC is the module.
type PEC struct {
	opts     Options
	log      *slog.Logger
	kv       modules.KV
	agencies modules.Agencies
	publish  func(modules.Event)
	metrics  *metrics
	tls      *tls.Config // for the provider's servers, without ServerName
	trust    *x509.CertPool
	outbox   *outbox

	ctx    context.Context // ends at Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Provision implements modules.Module.
func (m *PEC) Provision(h *modules.Host) error {
	m.opts = defaults
	if err := h.DecodeOptions(&m.opts); err != nil {
		return err
	}
	roots, trust, err := m.opts.validate()
	if err != nil {
		return err
	}
	m.log, m.kv, m.agencies, m.publish, m.trust = h.Logger(), h.KV(), h.Agencies(), h.Publish, trust
	m.tls = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	m.outbox = &outbox{kv: m.kv, wake: make(chan struct{}, 1)}
	if m.metrics, err = newMetrics(h.Metrics(), m.outbox.length); err != nil {
		return err
	}
	h.Handle("GET /evidence/{id}", http.HandlerFunc(m.evidence))
	if err := h.Subscribe(0, []string{modules.KindTicketChanged}, m.handle); err != nil {
		return err
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return nil
}

// Run implements modules.Runner: the outbox sender and the mailbox reader.
func (m *PEC) Run() {
	m.wg.Add(1)
	go m.sender(m.ctx)
	if m.opts.IMAPAddr != "" {
		m.wg.Add(1)
		go m.poller(m.ctx)
	}
}

// Stop implements modules.Stopper. The outbox is in the store already:
// what is not sent yet is sent after the next start.
func (m *PEC) Stop(ctx context.Context) error {
	m.cancel()
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("the sender or the mailbox reader did not stop in time")
	}
}

// notifies says whether a ticket change is news for the citizen.
func (o *Options) notifies(ev modules.TicketChanged) bool {
	return ev.CitizenPEC != "" && (ev.Opened || ev.PECSet || ev.Status != ev.Previous && slices.Contains(o.Notify, ev.Status))
}

// enqueueFor is how long the event handler keeps trying to put a message in
// an unreachable store.
const enqueueFor = 30 * time.Second

func (m *PEC) handle(ctx context.Context, e modules.Event) {
	ev, ok := e.(modules.TicketChanged)
	if !ok || !m.opts.notifies(ev) {
		return
	}
	agency := ev.Agency
	if a, ok := m.agencies.Agency(ev.Agency); ok && a.Name != "" {
		agency = a.Name
	}
	msg, err := compose(&m.opts, ev, agency, time.Now())
	if err == nil {
		err = m.checkSize(msg)
	}
	if err != nil {
		m.metrics.failures.WithLabelValues("refused").Inc()
		m.log.Error("PEC message not queued", "ticket", ev.Code, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, enqueueFor)
	defer cancel()
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := m.outbox.add(ctx, msg)
		if err == nil {
			m.log.Info("PEC message queued", "ticket", ev.Code, "status", ev.Status, "message_id", msg.ID)
			return
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			m.metrics.failures.WithLabelValues("store").Inc()
			m.log.Error("PEC message lost: store unreachable", "ticket", ev.Code, "err", err)
			return
		}
	}
}

// checkSize applies the provider's limit: the size times the recipients.
func (m *PEC) checkSize(msg *message) error {
	if n := int64(len(msg.Raw)) * int64(len(msg.To)); n > m.opts.SizeLimit {
		return fmt.Errorf("%d bytes to %d recipients exceed size_limit %d", len(msg.Raw), len(msg.To), m.opts.SizeLimit)
	}
	return nil
}

// serverTLS is the TLS configuration for one of the provider's servers.
func (m *PEC) serverTLS(addr string) *tls.Config {
	c := m.tls.Clone()
	c.ServerName, _, _ = net.SplitHostPort(addr)
	return c
}

package pec

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strconv"
	"time"
)

// submitTimeout bounds one submission, from dial to QUIT.
const submitTimeout = 2 * time.Minute

// rejectedError is the provider refusing the message itself (a 5xx answer
// to MAIL, RCPT or DATA): sending it again would not help.
type rejectedError struct{ err error }

func (e *rejectedError) Error() string { return "refused: " + e.err.Error() }
func (e *rejectedError) Unwrap() error { return e.err }

// permanent wraps a 5xx answer of the server as a rejectedError.
func permanent(stage string, err error) error {
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 {
		return &rejectedError{fmt.Errorf("%s: %w", stage, err)}
	}
	return fmt.Errorf("%s: %w", stage, err)
}

// submit hands msg to the provider by authenticated SMTP submission over
// TLS: the envelope sender is From, the recipients those of To.
func (m *PEC) submit(ctx context.Context, msg *message) error {
	ctx, cancel := context.WithTimeout(ctx, submitTimeout)
	defer cancel()
	addr := m.opts.SMTPAddr
	conf := m.serverTLS(addr)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if m.opts.SMTPTLS == "tls" {
		tc := tls.Client(conn, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, conf.ServerName)
	if err != nil {
		return err
	}
	defer c.Close()
	if m.opts.SMTPTLS == "starttls" {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("the server offers no STARTTLS")
		}
		if err := c.StartTLS(conf); err != nil {
			return fmt.Errorf("starttls: %w", err)
		}
	}
	if ok, size := c.Extension("SIZE"); ok {
		if n, err := strconv.ParseInt(size, 10, 64); err == nil && n > 0 && int64(len(msg.Raw)) > n {
			return &rejectedError{fmt.Errorf("%d bytes exceed the server's SIZE %d", len(msg.Raw), n)}
		}
	}
	// PlainAuth sends the password only over TLS.
	if err := c.Auth(smtp.PlainAuth("", m.opts.Username, m.opts.Password, conf.ServerName)); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if err := c.Mail(m.opts.From); err != nil {
		return permanent("mail from", err)
	}
	for _, to := range msg.To {
		if err := c.Rcpt(to); err != nil {
			return permanent("rcpt to", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return permanent("data", err)
	}
	if _, err := w.Write(msg.Raw); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return permanent("data", err)
	}
	c.Quit() // the provider has the message: a failed goodbye must not send it again
	return nil
}

package pec

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
)

// states maps the receipts to where the message stands for a recipient.
var states = map[string]modules.PECState{
	"accettazione":              modules.PECAccepted,
	"presa-in-carico":           modules.PECAccepted,
	"avvenuta-consegna":         modules.PECDelivered,
	"preavviso-errore-consegna": modules.PECWarning,
	"errore-consegna":           modules.PECNotDelivered,
	"non-accettazione":          modules.PECNotDelivered,
	"rilevazione-virus":         modules.PECNotDelivered,
}

const (
	pollTimeout = 5 * time.Minute // one visit to the mailbox
	fetchBatch  = 20              // messages fetched at a time
)

// poller reads the mailbox every PollInterval until ctx ends.
func (m *PEC) poller(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(m.opts.PollInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, pollTimeout)
		err := m.poll(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			m.metrics.mailboxErrors.Inc()
			m.log.Warn("PEC mailbox not read", "addr", m.opts.IMAPAddr, "err", err)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// cursor is how far a mailbox has been read: messages are handled in UID
// order, so the flags a person may set reading the same mailbox do not
// matter.
type cursor struct {
	UIDValidity uint32   `json:"uid_validity"`
	LastUID     imap.UID `json:"last_uid"`
}

// poll handles the messages that arrived since the last poll.
func (m *PEC) poll(ctx context.Context) error {
	c, err := m.dialIMAP()
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.Login(m.opts.Username, m.opts.Password).Wait(); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	sel, err := c.Select(m.opts.Mailbox, nil).Wait()
	if err != nil {
		return fmt.Errorf("select %s: %w", m.opts.Mailbox, err)
	}
	key := "imap:" + m.opts.Mailbox
	var cur cursor
	switch b, err := m.kv.Get(ctx, key); {
	case err == nil:
		json.Unmarshal(b, &cur)
	case !errors.Is(err, modules.ErrNotFound):
		return err
	}
	if cur.UIDValidity != sel.UIDValidity {
		// A new mailbox, or renumbered: read it all again; handling a
		// message twice records nothing twice.
		cur = cursor{UIDValidity: sel.UIDValidity}
	}
	if sel.NumMessages == 0 {
		return nil
	}
	found, err := c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{{imap.UIDRange{Start: cur.LastUID + 1}}}}, nil).Wait()
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	uids := slices.DeleteFunc(found.AllUIDs(), func(u imap.UID) bool { return u <= cur.LastUID })
	slices.Sort(uids)
	for len(uids) > 0 {
		batch := uids[:min(fetchBatch, len(uids))]
		uids = uids[len(batch):]
		// Sizes first, so that a message over the limit is never fetched.
		sizes, err := c.Fetch(imap.UIDSetNum(batch...), &imap.FetchOptions{UID: true, RFC822Size: true}).Collect()
		if err != nil {
			return fmt.Errorf("fetch sizes: %w", err)
		}
		slices.SortFunc(sizes, func(a, b *imapclient.FetchMessageBuffer) int { return cmp.Compare(a.UID, b.UID) })
		for _, s := range sizes {
			if err := m.handleUID(ctx, c, s.UID, s.RFC822Size); err != nil {
				return err // the store or the server failed: this message again next time
			}
			cur.LastUID = s.UID
			b, _ := json.Marshal(cur)
			if err := m.kv.Put(ctx, key, b, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// handleUID fetches one message and handles it, or quarantines it.
func (m *PEC) handleUID(ctx context.Context, c *imapclient.Client, uid imap.UID, size int64) error {
	var raw []byte
	err := error(bad(reasonTooLarge, "%d bytes", size))
	if size <= m.opts.SizeLimit {
		section := &imap.FetchItemBodySection{Peek: true}
		msgs, ferr := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if ferr != nil || len(msgs) != 1 {
			return fmt.Errorf("fetch %d: %v", uid, ferr)
		}
		raw = msgs[0].FindBodySection(section)
		err = m.handleMail(ctx, raw)
	}
	var bm *badMail
	if errors.As(err, &bm) {
		return m.quarantine(ctx, c, uid, raw, bm)
	}
	return err
}

func (m *PEC) dialIMAP() (*imapclient.Client, error) {
	opts := &imapclient.Options{TLSConfig: m.serverTLS(m.opts.IMAPAddr)}
	if m.opts.IMAPTLS == "starttls" {
		return imapclient.DialStartTLS(m.opts.IMAPAddr, opts)
	}
	return imapclient.DialTLS(m.opts.IMAPAddr, opts)
}

// handleMail trusts a message once its signature is verified, keeps it
// as evidence, and tells ticketing. A *badMail error quarantines it; others
// (the store) leave it for the next poll.
func (m *PEC) handleMail(ctx context.Context, raw []byte) error {
	pm, err := parsePEC(raw, m.trust)
	if err != nil {
		return err
	}
	evidence, err := m.keep(ctx, raw)
	if err != nil {
		return err
	}
	at := pm.Time
	if at.IsZero() {
		at = time.Now()
	}
	if pm.Type == "posta-certificata" {
		m.received(pm, evidence, at)
		return nil
	}
	m.metrics.receipts.WithLabelValues(pm.Type).Inc()
	b, err := m.kv.Get(ctx, "msg:"+pm.RefID)
	if errors.Is(err, modules.ErrNotFound) {
		m.metrics.unmatched.Inc()
		m.log.Warn("PEC receipt for a message not sent by this module", "receipt", pm.Type, "message_id", pm.RefID, "evidence", evidence)
		return nil
	}
	if err != nil {
		return err
	}
	var sent messageRecord
	if err := json.Unmarshal(b, &sent); err != nil {
		return err
	}
	for _, to := range pm.recipients() {
		m.publish(modules.PECDelivery{
			Time: at, TicketCode: sent.Ticket, MessageID: pm.RefID, Recipient: to,
			State: states[pm.Type], Receipt: pm.Type, Error: pm.Cert.Dati.ErroreEsteso, Evidence: evidence,
		})
	}
	m.log.Info("PEC receipt", "ticket", sent.Ticket, "message_id", pm.RefID, "receipt", pm.Type,
		"errore", pm.Cert.Errore, "evidence", evidence)
	return nil
}

// received tells ticketing of a citizen's certified message.
func (m *PEC) received(pm *pecMail, evidence string, at time.Time) {
	from := pm.Cert.Intestazione.Mittente // the certified sender, not the provider's envelope
	subject := pm.Original.Subject
	code, _ := ticketcode.Find(subject)
	m.metrics.received.Inc()
	m.publish(modules.PECReceived{
		Time: at, TicketCode: code, Agency: m.opts.Agency, From: from, Subject: subject, Text: pm.Original.Text,
		MessageID: cmp.Or(pm.Original.MessageID, pm.Cert.Dati.Identificativo), Evidence: evidence,
	})
	m.log.Info("PEC message from a citizen", "ticket", code, "evidence", evidence)
}

// evidencePath is where the evidence is served; tickets refer to it.
const evidencePath = "/api/pec/evidence/"

// keep stores the raw signed message under its SHA-256 and returns the
// reference tickets keep.
func (m *PEC) keep(ctx context.Context, raw []byte) (string, error) {
	sum := sha256.Sum256(raw)
	id := hex.EncodeToString(sum[:])
	if err := m.kv.Put(ctx, "ev:"+id, raw, 0); err != nil {
		return "", err
	}
	return evidencePath + id, nil
}

// quarantine keeps mail the module cannot trust or read, for a person to
// look at, and moves it to the quarantine folder if there is one.
func (m *PEC) quarantine(ctx context.Context, c *imapclient.Client, uid imap.UID, raw []byte, bm *badMail) error {
	sum := sha256.Sum256(raw)
	id := hex.EncodeToString(sum[:])
	if raw == nil {
		id = fmt.Sprintf("uid-%d", uid)
	}
	b, _ := json.Marshal(struct {
		Reason string    `json:"reason"`
		Error  string    `json:"error"`
		At     time.Time `json:"at"`
		Raw    []byte    `json:"raw,omitempty"` // none if too large to fetch: the folder has it
	}{bm.reason, bm.err.Error(), time.Now(), raw})
	if err := m.kv.Put(ctx, "q:"+id, b, quarantined); err != nil {
		return err
	}
	m.metrics.quarantined.WithLabelValues(bm.reason).Inc()
	m.log.Warn("PEC mail quarantined", "reason", bm.reason, "err", bm.err, "uid", uint32(uid), "sha256", id)
	if m.opts.QuarantineFolder == "" {
		return nil
	}
	if err := c.Create(m.opts.QuarantineFolder, nil).Wait(); err != nil && !alreadyExists(err) {
		m.log.Warn("PEC quarantine folder not created", "folder", m.opts.QuarantineFolder, "err", err)
	}
	if _, err := c.Move(imap.UIDSetNum(uid), m.opts.QuarantineFolder).Wait(); err != nil {
		m.log.Warn("PEC mail not moved to quarantine", "folder", m.opts.QuarantineFolder, "err", err)
	}
	return nil
}

func alreadyExists(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie) && (ie.Code == imap.ResponseCodeAlreadyExists || strings.Contains(strings.ToLower(ie.Text), "exist"))
}

// evidence serves GET /api/pec/evidence/{id}: a signed message received,
// as it arrived. The caller must name the agency it acts for, as with the
// ticketing API, whose tickets link here.
func (m *PEC) evidence(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if r.Header.Get("X-Agency") == "" {
		http.Error(w, "missing X-Agency header", http.StatusUnauthorized)
		return
	}
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		http.Error(w, "not an evidence id", http.StatusBadRequest)
		return
	}
	raw, err := m.kv.Get(r.Context(), "ev:"+id)
	switch {
	case errors.Is(err, modules.ErrNotFound):
		http.Error(w, "no such evidence", http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "message/rfc822")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.eml"`)
	w.Write(raw)
}

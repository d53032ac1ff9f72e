package pec

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"

	"github.com/lineamica/centralino/modules"
)

// message is a composed message, as the outbox keeps it: the bytes are
// made once, so that every attempt sends the same Message-ID and text.
type message struct {
	ID        string    `json:"id"` // Message-ID, with its angle brackets
	Ticket    string    `json:"ticket"`
	To        []string  `json:"to"`
	Raw       []byte    `json:"raw"`
	Queued    time.Time `json:"queued"`
	Attempts  int       `json:"attempts"`
	NextAt    time.Time `json:"next_at"`
	LastError string    `json:"last_error,omitempty"`
}

// statusText says each status to the citizen: its name, where the case
// stands, and what happens next. %s is the agency's name.
var statusText = map[string]struct{ name, now, next string }{
	"aperto": {"aperta",
		"La Sua richiesta è stata registrata presso %s ed è in attesa di un operatore.",
		"Un operatore la prenderà in carico al più presto. Le scriveremo a ogni cambio di stato."},
	"in_lavorazione": {"in lavorazione",
		"Un operatore di %s sta lavorando alla Sua richiesta.",
		"Le scriveremo quando la pratica sarà risolta, o se passerà a un altro ente."},
	"trasferito": {"trasferita",
		"La Sua richiesta è stata trasferita a %s, competente per la materia.",
		"L'ente riceve tutta la storia della pratica: non dovrà ripetere quanto già detto."},
	"risolto": {"risolta",
		"%s considera risolta la Sua richiesta.",
		"Se non è così, risponda a questo messaggio o richiami Linea Amica indicando il codice della pratica: sarà riaperta."},
	"chiuso": {"chiusa",
		"La pratica è stata chiusa da %s.",
		"Non riceverà altre comunicazioni su questa pratica. Per una nuova richiesta può contattare di nuovo Linea Amica."},
}

// compose writes the message for a ticket change, following what PEC
// providers check: From is the mailbox (the envelope sender), the citizen
// is the only recipient, in To, and there is no Bcc.
func compose(o *Options, ev modules.TicketChanged, agency string, now time.Time) (*message, error) {
	st, ok := statusText[ev.Status]
	if !ok {
		return nil, fmt.Errorf("unknown status %q", ev.Status)
	}
	if !bareAddress(ev.CitizenPEC) {
		return nil, fmt.Errorf("the citizen's PEC address is not an e-mail address")
	}
	var body strings.Builder
	fmt.Fprintf(&body, "Gentile cittadina, gentile cittadino,\n\n")
	fmt.Fprintf(&body, "Le scriviamo per la Sua pratica %s.\n\n", ev.Code)
	fmt.Fprintf(&body, "Ente: %s\nStato della pratica: %s\n\n", agency, st.name)
	fmt.Fprintf(&body, st.now+"\n\n", agency)
	fmt.Fprintf(&body, "Cosa succede ora: %s\n\n", st.next)
	if o.RatingURL != "" && (ev.Status == "risolto" || ev.Status == "chiuso") {
		fmt.Fprintf(&body, "Come valuta il servizio ricevuto? Può esprimere il Suo giudizio, in forma anonima:\n%s/rate/%s\n\n", o.RatingURL, ev.Code)
	}
	fmt.Fprintf(&body, "Per scriverci su questa pratica risponda a questo messaggio dalla Sua casella PEC, lasciando il codice %s nell'oggetto.\n\n", ev.Code)
	fmt.Fprintf(&body, "Linea Amica - messaggio inviato automaticamente.\n")

	id := messageID(ev.Code, o.From)
	var b bytes.Buffer
	header := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	header("From", o.From)
	header("To", ev.CitizenPEC)
	header("Subject", mime.QEncoding.Encode("utf-8", fmt.Sprintf("Linea Amica - pratica %s: %s", ev.Code, st.name)))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", id)
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	header("X-TipoRicevuta", o.ReceiptType)
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(body.String())) // in text mode it ends lines with CRLF
	qp.Close()
	return &message{ID: id, Ticket: ev.Code, To: []string{ev.CitizenPEC}, Raw: b.Bytes(), Queued: now, NextAt: now}, nil
}

// messageID is unique and names the ticket, for whoever reads a receipt.
func messageID(code, from string) string {
	var r [12]byte
	rand.Read(r[:])
	return "<" + strings.ToLower(code) + "." + hex.EncodeToString(r[:]) + "@" + from[strings.LastIndexByte(from, '@')+1:] + ">"
}

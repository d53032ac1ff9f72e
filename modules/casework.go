package modules

import "time"

// Events of a citizen's case rather than of a call: published by modules
// (ticketing, pec, survey) for one another, never by the switch.
const (
	KindTicketChanged = "ticket.changed"
	KindPECDelivery   = "pec.delivery"
	KindPECReceived   = "pec.received"
	KindRatingOffered = "rating.offered"
	KindRatingGiven   = "rating.given"
)

// TicketChanged: a ticket was opened, changed status, or had the citizen's
// PEC address set. Published by ticketing after the change is stored.
type TicketChanged struct {
	Time     time.Time `json:"time"`
	Code     string    `json:"code"`
	Status   string    `json:"status"`
	Previous string    `json:"previous,omitempty"` // status before; "" when Opened
	Opened   bool      `json:"opened,omitempty"`
	// Agency is the IPA code of the ticket's latest agency; Agencies every
	// agency it reached, in order.
	Agency     string   `json:"agency"`
	Agencies   []string `json:"agencies"`
	CitizenPEC string   `json:"citizen_pec,omitempty"`
	// PECSet: the change set or changed CitizenPEC (the status may be the
	// same as before).
	PECSet bool   `json:"pec_set,omitempty"`
	CallID string `json:"call_id,omitempty"` // the call that caused the change, if any
	// Notes are the operators' notes so far, oldest first (the case's
	// history, for suggestions).
	Notes []string `json:"notes,omitempty"`
}

// PECState is where a certified message stands for one recipient, as told
// by the provider's signed receipts.
type PECState string

const (
	PECAccepted     PECState = "accepted"      // ricevuta di accettazione
	PECDelivered    PECState = "delivered"     // ricevuta di avvenuta consegna
	PECWarning      PECState = "warning"       // avviso di mancata consegna (preavviso)
	PECNotDelivered PECState = "not-delivered" // errore di consegna / non accettazione
)

// PECDelivery: a verified receipt told the state of a message sent for a
// ticket. Published by pec; ticketing records it on the ticket.
type PECDelivery struct {
	Time       time.Time `json:"time"`
	TicketCode string    `json:"ticket_code"`
	MessageID  string    `json:"message_id"` // of the message sent
	Recipient  string    `json:"recipient"`
	State      PECState  `json:"state"`
	Receipt    string    `json:"receipt"` // receipt type as the provider names it (accettazione, avvenuta-consegna...)
	// Error is why the message was not delivered, as the provider says it
	// (daticert errore-esteso, e.g. "5.1.1 - casella inesistente").
	Error    string `json:"error,omitempty"`
	Evidence string `json:"evidence"`
}

// PECReceived: a certified message (posta-certificata) arrived from a
// citizen. TicketCode is the code found in its subject, or "" to open a new
// ticket. Published by pec; ticketing attaches or opens.
type PECReceived struct {
	Time       time.Time `json:"time"`
	TicketCode string    `json:"ticket_code,omitempty"`
	Agency     string    `json:"agency,omitempty"` // IPA code of the mailbox's agency
	From       string    `json:"from"`
	Subject    string    `json:"subject"`
	Text       string    `json:"text,omitempty"` // the message's plain text, decoded to UTF-8
	MessageID  string    `json:"message_id"`
	Evidence   string    `json:"evidence"` // where the raw signed message is kept
}

// Rating is a citizen's emoticon vote ("Mettiamoci la faccia").
type Rating int

const (
	RatingPositive   Rating = 1
	RatingSufficient Rating = 2
	RatingNegative   Rating = 3
)

// RatingOffered: the survey was offered for a call (whether or not a vote
// followed).
type RatingOffered struct {
	Call
	Agency string `json:"agency"` // the rated agency
}

// RatingGiven: a citizen voted, by phone or on the web. Never names the
// operator.
type RatingGiven struct {
	Time       time.Time `json:"time"`
	Agency     string    `json:"agency"`
	TicketCode string    `json:"ticket_code,omitempty"`
	CallID     string    `json:"call_id,omitempty"`
	Rating     Rating    `json:"rating"`
	Reason     string    `json:"reason,omitempty"` // for negative votes: waiting, service, come-back, other
	Channel    string    `json:"channel"`          // phone or web
}

func (TicketChanged) Kind() string { return KindTicketChanged }
func (PECDelivery) Kind() string   { return KindPECDelivery }
func (PECReceived) Kind() string   { return KindPECReceived }
func (RatingOffered) Kind() string { return KindRatingOffered }
func (RatingGiven) Kind() string   { return KindRatingGiven }

// Agency is what modules know of an agency of the directory.
type Agency struct {
	Code   string `json:"code"` // IPA code
	Name   string `json:"name"`
	Region string `json:"region,omitempty"` // "" for central bodies
	Sector string `json:"sector"`
}

// Agencies looks agencies up in the directory, for modules that aggregate
// by region or sector. ok is false for an unknown code.
type Agencies interface {
	Agency(code string) (a Agency, ok bool)
	List() []Agency
}

type noAgencies struct{}

func (noAgencies) Agency(string) (Agency, bool) { return Agency{}, false }
func (noAgencies) List() []Agency               { return nil }

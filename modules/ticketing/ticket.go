package ticketing

import (
	"slices"
	"time"

	"github.com/lineamica/centralino/modules"
)

// SchemaVersion is the version of the ticket's JSON format described by
// docs/ticket.schema.json. It changes only when a field changes meaning or
// goes away; new optional fields keep it.
const SchemaVersion = 1

// Status is where a ticket stands. Call events move it between aperto,
// in_lavorazione and trasferito; operators set in_lavorazione, risolto and
// chiuso.
type Status string

const (
	StatusAperto        Status = "aperto"         // a call waits for an operator
	StatusInLavorazione Status = "in_lavorazione" // an operator has the call or the case
	StatusTrasferito    Status = "trasferito"     // handed to another agency, not answered there yet
	StatusRisolto       Status = "risolto"        // solved; a repeat call reopens it
	StatusChiuso        Status = "chiuso"         // read-only; deleted after the retention period
)

var statuses = []Status{StatusAperto, StatusInLavorazione, StatusTrasferito, StatusRisolto, StatusChiuso}

// Via says how a call reached the agency of a hop.
type Via string

const (
	ViaCall       Via = "call"        // the citizen's call that opened the ticket
	ViaRepeatCall Via = "repeat_call" // a later call from the same number, linked
	ViaTransfer   Via = "transfer"    // an operator transferred the call
	ViaOverflow   Via = "overflow"    // routing moved the call on (no answer, closed...)
	ViaPEC        Via = "pec"         // a certified e-mail opened the ticket
)

// Channels by which a citizen opened a ticket.
const (
	ChannelPhone = "phone"
	ChannelPEC   = "pec"
)

// Ticket is a citizen's case and every agency it went through. Its JSON is
// the documented format of docs/ticket.schema.json.
type Ticket struct {
	SchemaVersion int       `json:"schema_version"`
	Code          string    `json:"code"`
	Channel       string    `json:"channel,omitempty"` // phone or pec; absent in tickets opened before it was recorded
	Status        Status    `json:"status"`
	Region        string    `json:"region"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	ClosedAt      time.Time `json:"closed_at,omitzero"`
	Caller        Caller    `json:"caller"`
	CitizenPEC    string    `json:"citizen_pec,omitempty"`
	// Agencies are the IPA codes of the agencies reached, in order of first
	// reach: those that may read the ticket.
	Agencies []string `json:"agencies"`
	Hops     []Hop    `json:"hops"`
	Notes    []Note   `json:"notes,omitempty"`
	// PECMessages are the certified messages sent to the citizen, with
	// what the provider's verified receipts say of them.
	PECMessages []PECMessage `json:"pec_messages,omitempty"`
	// PECReceived are the certified messages the citizen sent about it.
	PECReceived []PECAttachment `json:"pec_received,omitempty"`
	Ratings     []Rating        `json:"ratings,omitempty"`

	// stored is the status as last saved or read: a save that changes it
	// tells the other modules.
	stored Status
}

// Caller is the citizen's line.
type Caller struct {
	Number      string `json:"number"`
	DisplayName string `json:"display_name,omitempty"`
	Trunk       string `json:"trunk,omitempty"`
}

// Hop is one agency reached by one call.
type Hop struct {
	Agency string `json:"agency"` // IPA code
	CallID string `json:"call_id"`
	Via    Via    `json:"via"`
	// Reason is the transfer type (blind, attended) or the overflow reason
	// (no-answer, busy, closed, unavailable, failed).
	Reason        string    `json:"reason,omitempty"`
	TransferredBy string    `json:"transferred_by,omitempty"`
	ReachedAt     time.Time `json:"reached_at"`
	Operator      string    `json:"operator,omitempty"` // who answered
	AnsweredAt    time.Time `json:"answered_at,omitzero"`
	WaitSeconds   float64   `json:"wait_seconds,omitempty"` // from offer to answer
	EndedAt       time.Time `json:"ended_at,omitzero"`      // the call ended or moved on
	TalkSeconds   float64   `json:"talk_seconds,omitempty"`
	Disposition   string    `json:"disposition,omitempty"` // answered, abandoned, busy...
}

// Note is an operator's note.
type Note struct {
	Time   time.Time `json:"time"`
	Agency string    `json:"agency"`
	User   string    `json:"user,omitempty"`
	Text   string    `json:"text"`
}

// PECMessage is a certified message sent for the ticket.
type PECMessage struct {
	MessageID string `json:"message_id"`
	// Recipients are where the message stands for each recipient, as the
	// latest receipt that moved it on says.
	Recipients []PECRecipient `json:"recipients"`
	// Receipts are every verified receipt, in order of arrival.
	Receipts []PECReceipt `json:"receipts"`
}

// PECRecipient is the state of a message for one recipient.
type PECRecipient struct {
	Address  string           `json:"address"`
	State    modules.PECState `json:"state"`
	Receipt  string           `json:"receipt"`         // type of the receipt that told it
	Time     time.Time        `json:"time"`            // when the provider certified it
	Error    string           `json:"error,omitempty"` // why not delivered, as the provider says
	Evidence string           `json:"evidence"`        // where the signed receipt is kept
}

// PECReceipt is one verified receipt of the provider.
type PECReceipt struct {
	Receipt   string           `json:"receipt"`
	Recipient string           `json:"recipient"`
	State     modules.PECState `json:"state"`
	Time      time.Time        `json:"time"`
	Error     string           `json:"error,omitempty"`
	Evidence  string           `json:"evidence"`
}

// PECAttachment is a certified message from the citizen.
type PECAttachment struct {
	Time      time.Time `json:"time"`
	From      string    `json:"from"`
	Subject   string    `json:"subject"`
	MessageID string    `json:"message_id"`
	Text      string    `json:"text,omitempty"`
	Evidence  string    `json:"evidence"`
}

// Rating is a citizen's vote. It never names the operator.
type Rating struct {
	Time    time.Time      `json:"time"`
	Agency  string         `json:"agency,omitempty"` // the agency rated
	Rating  modules.Rating `json:"rating"`           // 1 positive, 2 sufficient, 3 negative
	Reason  string         `json:"reason,omitempty"`
	Channel string         `json:"channel"`
}

func (t *Ticket) clone() *Ticket {
	c := *t
	c.Agencies = slices.Clone(t.Agencies)
	c.Hops = slices.Clone(t.Hops)
	c.Notes = slices.Clone(t.Notes)
	c.PECMessages = slices.Clone(t.PECMessages)
	for i, pm := range c.PECMessages {
		c.PECMessages[i].Recipients = slices.Clone(pm.Recipients)
		c.PECMessages[i].Receipts = slices.Clone(pm.Receipts)
	}
	c.PECReceived = slices.Clone(t.PECReceived)
	c.Ratings = slices.Clone(t.Ratings)
	return &c
}

// hop returns the hop of the call's latest agency, or nil.
func (t *Ticket) hop(callID string) *Hop {
	for i := len(t.Hops) - 1; i >= 0; i-- {
		if t.Hops[i].CallID == callID {
			return &t.Hops[i]
		}
	}
	return nil
}

// addHop appends h and returns it, for the caller to fill in.
func (t *Ticket) addHop(h Hop) *Hop {
	t.Hops = append(t.Hops, h)
	t.listAgencies()
	return &t.Hops[len(t.Hops)-1]
}

// listAgencies sets Agencies from the hops.
func (t *Ticket) listAgencies() {
	var agencies []string
	for _, h := range t.Hops {
		if !slices.Contains(agencies, h.Agency) {
			agencies = append(agencies, h.Agency)
		}
	}
	t.Agencies = agencies
}

// progress is a status change told by a call event: it never reopens a
// closed ticket.
func (t *Ticket) progress(s Status) {
	if t.Status != StatusChiuso {
		t.Status = s
	}
}

// touch moves UpdatedAt to at, never back: events may arrive out of order.
func (t *Ticket) touch(at time.Time) {
	if at.After(t.UpdatedAt) {
		t.UpdatedAt = at
	}
}

package modules

import "time"

// Event is anything published on the bus. Events are plain structs, published
// by value and shared by every subscriber: handlers must treat them (and the
// maps and pointers inside them) as read-only.
type Event interface {
	Kind() string
}

// CallEvent is an Event about one call. Every call event embeds Call.
type CallEvent interface {
	Event
	CallInfo() Call
}

// Kinds of the events the switch publishes, for Subscribe's filter.
const (
	KindCallOffered     = "call.offered"
	KindCallRinging     = "call.ringing"
	KindCallAnswered    = "call.answered"
	KindCallTransferred = "call.transferred"
	KindCallOverflowed  = "call.overflowed"
	KindCallEnded       = "call.ended"
	KindDigitsCollected = "call.digits"
	KindRegistered      = "phone.registered"
	KindUnregistered    = "phone.unregistered"
)

// Call is what every call event carries.
type Call struct {
	CallID string    `json:"call_id"` // SIP Call-ID of the leg from the caller
	Time   time.Time `json:"time"`    // when the event happened
	Caller Caller    `json:"caller"`
	Callee string    `json:"callee"` // the dialled number, as dialled
	// IPA codes. SourceAgency is "" for callers outside the directory;
	// DestAgency is the agency the call is currently routed to.
	SourceAgency string `json:"source_agency,omitempty"`
	DestAgency   string `json:"dest_agency,omitempty"`
	User         string `json:"user,omitempty"` // the answering or acting user (username)
	Node         string `json:"node"`           // id of the node publishing the event
	// Headers travel with the call across transfers so modules can correlate
	// (e.g. "X-Ticket": the ticket code). Keys in canonical MIME form.
	Headers map[string]string `json:"headers,omitempty"`
}

// CallInfo returns the common part of a call event.
func (c Call) CallInfo() Call { return c }

// Caller identifies who placed the call.
type Caller struct {
	Number      string `json:"number"` // number or username
	DisplayName string `json:"display_name,omitempty"`
	InDirectory bool   `json:"in_directory"`    // a user of the network, not a citizen
	Trunk       string `json:"trunk,omitempty"` // name of the trunk it came in on; "" from a phone
}

// Side says which end of a call did something.
type Side string

const (
	SideCaller Side = "caller"
	SideCallee Side = "callee"
	SideSwitch Side = "switch" // timers, errors, shutdown
)

// CallOffered: an INVITE was authenticated and routed; the switch is about to
// ring the first targets.
type CallOffered struct {
	Call
	// Public is true when the callee is one of DestAgency's public numbers,
	// rather than a user's extension.
	Public bool `json:"public"`
}

// CallRinging: a target answered with 180 or 183.
type CallRinging struct {
	Call
	Code int `json:"code"`
}

// CallAnswered: a target answered with 2xx; User is who answered.
type CallAnswered struct {
	Call
	Wait time.Duration `json:"wait_ns"` // from offer to answer
}

// TransferType tells a blind transfer from an attended one.
type TransferType string

const (
	TransferBlind    TransferType = "blind"
	TransferAttended TransferType = "attended"
)

// CallTransferred: the call was handed to another target. CallID is the
// transferred leg; NewCallID the leg the transfer created; OriginalCallID the
// first call of the chain, the same across any number of transfers.
type CallTransferred struct {
	Call
	Type           TransferType `json:"type"`
	FromAgency     string       `json:"from_agency"`
	ToAgency       string       `json:"to_agency"`
	By             string       `json:"by"`     // username of who transferred
	Target         string       `json:"target"` // number or user transferred to
	OriginalCallID string       `json:"original_call_id"`
	NewCallID      string       `json:"new_call_id"`
}

// OverflowReason says why a call left an agency for its overflow target.
type OverflowReason string

const (
	OverflowNoAnswer    OverflowReason = "no-answer"
	OverflowBusy        OverflowReason = "busy"
	OverflowClosed      OverflowReason = "closed"      // outside office hours
	OverflowUnavailable OverflowReason = "unavailable" // nobody registered
	OverflowFailed      OverflowReason = "failed"
)

// CallOverflowed: routing moved the call to another agency without a transfer.
type CallOverflowed struct {
	Call
	FromAgency string         `json:"from_agency"`
	ToAgency   string         `json:"to_agency"`
	Reason     OverflowReason `json:"reason"`
}

// Disposition is how a call ended.
type Disposition string

const (
	DispositionAnswered  Disposition = "answered"
	DispositionAbandoned Disposition = "abandoned" // caller hung up before an answer
	DispositionBusy      Disposition = "busy"
	DispositionNoAnswer  Disposition = "no-answer"
	DispositionFailed    Disposition = "failed"   // network or server error
	DispositionRejected  Disposition = "rejected" // declined, forbidden, not found
)

// CallEnded is the last event of a call.
type CallEnded struct {
	Call
	Disposition Disposition `json:"disposition"`
	Code        int         `json:"code"` // final SIP status; 200 for answered calls
	// Setup runs from offer to first ringing, Ring from ringing to answer (or
	// to the end), Talk from answer to end.
	Setup    time.Duration `json:"setup_ns"`
	Ring     time.Duration `json:"ring_ns"`
	Talk     time.Duration `json:"talk_ns"`
	HangupBy Side          `json:"hangup_by"`
	Media    *MediaQuality `json:"media,omitempty"` // nil unless the relay carried the media
}

// MediaQuality is what the relay saw of each leg's RTP.
type MediaQuality struct {
	Caller LegQuality `json:"caller"`
	Callee LegQuality `json:"callee"`
}

// LegQuality describes the RTP received from one leg.
type LegQuality struct {
	Packets uint64  `json:"packets"`
	Loss    float64 `json:"loss"` // ratio, 0..1
	Jitter  float64 `json:"jitter_seconds"`
	MOS     float64 `json:"mos"` // E-model estimate, 1..4.5
}

// DigitsCollected: DTMF digits were received on a leg (e.g. a survey answer).
type DigitsCollected struct {
	Call
	Leg    Side   `json:"leg"`
	Digits string `json:"digits"`
}

// Phone is what every registration event carries.
type Phone struct {
	Time      time.Time `json:"time"`
	User      string    `json:"user"` // username, the user part of the AOR
	Agency    string    `json:"agency"`
	Contact   string    `json:"contact"`
	Source    string    `json:"source"`    // ip:port the REGISTER came from
	Transport string    `json:"transport"` // udp, tcp, tls, ws, wss
	Node      string    `json:"node"`
}

// Registered: a contact was bound (or refreshed with a new contact).
type Registered struct {
	Phone
	Expires   time.Duration `json:"expires_ns"`
	UserAgent string        `json:"user_agent,omitempty"`
}

// Unregistered: a contact binding went away.
type Unregistered struct {
	Phone
	Reason string `json:"reason"` // "unregistered" (Expires: 0) or "expired"
}

func (CallOffered) Kind() string     { return KindCallOffered }
func (CallRinging) Kind() string     { return KindCallRinging }
func (CallAnswered) Kind() string    { return KindCallAnswered }
func (CallTransferred) Kind() string { return KindCallTransferred }
func (CallOverflowed) Kind() string  { return KindCallOverflowed }
func (CallEnded) Kind() string       { return KindCallEnded }
func (DigitsCollected) Kind() string { return KindDigitsCollected }
func (Registered) Kind() string      { return KindRegistered }
func (Unregistered) Kind() string    { return KindUnregistered }

// Package directory stores the network's agencies, users and registrations.
//
// One interface, Store, has two implementations: Memory (the embedded default)
// and Redis. Both must pass the same contract suite (see contract_test.go), so
// the rest of the switch never knows which one it talks to.
package directory

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by lookups that find nothing.
var ErrNotFound = errors.New("directory: not found")

// Role says what a user may do.
type Role string

const (
	RolePhone    Role = "phone"    // a desk phone or softphone of an agency
	RoleOperator Role = "operator" // may answer queues and transfer outside the agency
	RoleAdmin    Role = "admin"    // network-wide role
)

// Agency is an administration's office: an URP, a call center, a ministry desk.
// It is keyed by its IPA code (cod_amm, plus "_"+cod_uni_ou where one body has
// several offices in the network).
type Agency struct {
	Code     string   `yaml:"code" json:"code"`
	Name     string   `yaml:"name" json:"name"`
	Region   string   `yaml:"region" json:"region"`                         // "" for central bodies
	Sector   string   `yaml:"sector" json:"sector"`                         // general, health, pensions, tax, labour, tourism
	Prefix   string   `yaml:"prefix" json:"prefix"`                         // full number of a user = Prefix + Extension
	Numbers  []string `yaml:"numbers" json:"numbers"`                       // public numbers, ringing the agency's operators
	Overflow string   `yaml:"overflow,omitempty" json:"overflow,omitempty"` // next agency's IPA code

	// Hours is the weekly schedule in Europe/Rome time, e.g.
	// "mon-fri 08:30-13:30, tue,thu 14:30-17:00"; "" means always open.
	// Outside it, and on national holidays and Closures, calls overflow.
	Hours string `yaml:"hours,omitempty" json:"hours,omitempty"`
	// Closures are extra closed days: "2026-12-24" once, "09-19" every year.
	Closures []string `yaml:"closures,omitempty" json:"closures,omitempty"`
	// Media overrides the switch's media anchoring for calls of this agency:
	// "always", "nat" (only when a side is behind NAT) or "never".
	Media string `yaml:"media,omitempty" json:"media,omitempty"`
	// Queue makes the public numbers ring logged-in operators by a strategy;
	// its zero value rings every operator at once.
	Queue QueueConfig `yaml:"queue,omitempty" json:"queue,omitzero"`
}

// QueueConfig is how an agency's queue rings its operators.
type QueueConfig struct {
	Strategy    string        `yaml:"strategy" json:"strategy"`                             // ring-all, round-robin, longest-idle, fewest-calls
	RingTimeout time.Duration `yaml:"ring_timeout,omitempty" json:"ring_timeout,omitempty"` // per operator
	MaxWait     time.Duration `yaml:"max_wait,omitempty" json:"max_wait,omitempty"`         // before the call overflows
}

// User is a SIP account. Username is the user part of its AOR; the domain is
// the switch's realm. The password is never stored, only the digest HA1s.
type User struct {
	Username    string `yaml:"username" json:"username"`
	DisplayName string `yaml:"display_name" json:"display_name"`
	Agency      string `yaml:"agency" json:"agency"`
	Role        Role   `yaml:"role" json:"role"`
	Extension   string `yaml:"extension" json:"extension"`
	HA1MD5      string `yaml:"ha1_md5" json:"ha1_md5"`
	HA1SHA256   string `yaml:"ha1_sha256" json:"ha1_sha256"`
	// Media is what the user's phone takes when media is anchored: "rtp"
	// (a desk phone), "srtp" (a citizen's softphone), or "" for whatever
	// the caller offered.
	Media string `yaml:"media,omitempty" json:"media,omitempty"`
}

// Binding is one registered contact of a user (RFC 3261 §10).
type Binding struct {
	AOR     string `json:"aor"`     // username
	Contact string `json:"contact"` // the Contact URI as registered
	Source  string `json:"source"`  // ip:port the REGISTER came from
	// Flow says the phone must be reached at Source rather than at its
	// Contact: it is behind NAT, or registered over a connection (TCP, TLS, WS)
	// that requests to it must reuse.
	Flow bool `json:"flow,omitempty"`
	// MD5Only says the phone cannot answer a challenge that lists several
	// digest algorithms; requests from its address are challenged with MD5 alone.
	MD5Only   bool      `json:"md5_only,omitempty"`
	Transport string    `json:"transport"` // udp, tcp, tls, ws, wss
	Node      string    `json:"node"`      // id of the node holding the phone's flow
	CallID    string    `json:"call_id"`
	CSeq      uint32    `json:"cseq"`
	UserAgent string    `json:"user_agent,omitempty"`
	Expires   time.Time `json:"expires"`
}

// Registration is what one REGISTER asks of an AOR's bindings (RFC 3261
// §10.3 steps 6–8): bindings to add or refresh, contacts to remove, or all of
// them (Contact: *). A binding in Put that has already expired removes its
// contact. The changes are refused as a whole, with ErrOutOfOrder, when a
// contact they name is held by a binding of the same Call-ID with an equal or
// higher CSeq; RemoveAll leaves such bindings alone instead.
type Registration struct {
	AOR       string
	CallID    string
	CSeq      uint32
	Put       []Binding
	Remove    []string
	RemoveAll bool
}

// ErrOutOfOrder refuses a Registration older than the bindings it changes.
var ErrOutOfOrder = errors.New("directory: out-of-order registration")

// Store is the directory. Implementations are safe for concurrent use.
// Lookups return ErrNotFound (wrapped or not) when nothing matches.
type Store interface {
	Agency(ctx context.Context, code string) (Agency, error)
	AgencyByNumber(ctx context.Context, number string) (Agency, error)
	AgencyByPrefix(ctx context.Context, prefix string) (Agency, error)
	Agencies(ctx context.Context) ([]Agency, error)
	PutAgency(ctx context.Context, a Agency) error
	DeleteAgency(ctx context.Context, code string) error

	User(ctx context.Context, username string) (User, error)
	UserByExtension(ctx context.Context, agency, extension string) (User, error)
	Users(ctx context.Context, agency string) ([]User, error) // agency "" lists all
	PutUser(ctx context.Context, u User) error
	DeleteUser(ctx context.Context, username string) error

	// Bindings returns the unexpired bindings of an AOR.
	Bindings(ctx context.Context, aor string) ([]Binding, error)
	// PutBinding inserts or replaces the binding of (AOR, Contact).
	PutBinding(ctx context.Context, b Binding) error
	DeleteBinding(ctx context.Context, aor, contact string) error
	// Register applies the changes of one REGISTER to an AOR's bindings in
	// one step (one round trip for Redis) and returns the AOR's unexpired
	// bindings before and after them, sorted by contact.
	Register(ctx context.Context, r Registration) (before, after []Binding, err error)
	// AllBindings lists every unexpired binding; for operators, not the call path.
	AllBindings(ctx context.Context) ([]Binding, error)

	Ping(ctx context.Context) error
	Close() error
}

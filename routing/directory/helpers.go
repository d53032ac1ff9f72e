package directory

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Logic shared by Memory and Redis, so both keep the same contract.

func notFound(kind, key string) error {
	return fmt.Errorf("directory: %s %q: %w", kind, key, ErrNotFound)
}

func checkAgency(a Agency) error {
	if a.Code == "" {
		return errors.New("directory: agency without code")
	}
	return nil
}

func checkUser(u User) error {
	if u.Username == "" {
		return errors.New("directory: user without username")
	}
	return nil
}

// checkBinding also normalises Expires to UTC without a monotonic reading, the
// form in which every store hands it back.
func checkBinding(b Binding) (Binding, error) {
	if b.AOR == "" || b.Contact == "" {
		return b, errors.New("directory: binding without AOR or contact")
	}
	b.Expires = b.Expires.UTC()
	return b, nil
}

// cloneAgency copies the Numbers slice so that callers and the store never
// share it.
func cloneAgency(a Agency) Agency {
	a.Numbers = slices.Clone(a.Numbers)
	a.Closures = slices.Clone(a.Closures)
	return a
}

// dropped returns the values of old that are not in cur: index entries to remove.
func dropped(old, cur []string) []string {
	var out []string
	for _, v := range old {
		if v != "" && !slices.Contains(cur, v) {
			out = append(out, v)
		}
	}
	return out
}

// live keeps the unexpired bindings, sorted by AOR then contact.
func live(bs []Binding, now time.Time) []Binding {
	bs = slices.DeleteFunc(bs, func(b Binding) bool { return !b.Expires.After(now) })
	slices.SortFunc(bs, func(a, b Binding) int {
		return cmp.Or(strings.Compare(a.AOR, b.AOR), strings.Compare(a.Contact, b.Contact))
	})
	return bs
}

func sortAgencies(as []Agency) []Agency {
	slices.SortFunc(as, func(a, b Agency) int { return strings.Compare(a.Code, b.Code) })
	return as
}

func sortUsers(us []User) []User {
	slices.SortFunc(us, func(a, b User) int { return strings.Compare(a.Username, b.Username) })
	return us
}

// checkRegistration validates r and normalises the bindings it puts.
func checkRegistration(r Registration) (Registration, error) {
	if r.AOR == "" {
		return r, errors.New("directory: registration without AOR")
	}
	put := make([]Binding, len(r.Put))
	for i, b := range r.Put {
		b, err := checkBinding(b)
		if err != nil {
			return r, err
		}
		if b.AOR != r.AOR {
			return r, fmt.Errorf("directory: binding of %q in a registration of %q", b.AOR, r.AOR)
		}
		put[i] = b
	}
	r.Put = put
	return r, nil
}

// outOfOrder reports whether b was registered by the same Call-ID as r with
// an equal or higher CSeq (RFC 3261 §10.3 step 7).
func (r Registration) outOfOrder(b Binding) bool {
	return b.CallID == r.CallID && r.CSeq <= b.CSeq
}

// names reports whether r puts or removes contact.
func (r Registration) names(contact string) bool {
	return slices.Contains(r.Remove, contact) ||
		slices.ContainsFunc(r.Put, func(b Binding) bool { return b.Contact == contact })
}

// applyRegistration returns the live bindings of cur (those of r.AOR) once r
// is applied at now, sorted by contact. cur is not modified.
func applyRegistration(cur []Binding, r Registration, now time.Time) ([]Binding, error) {
	for _, b := range cur {
		if b.Expires.After(now) && r.outOfOrder(b) && r.names(b.Contact) {
			return nil, ErrOutOfOrder
		}
	}
	out := make([]Binding, 0, len(cur)+len(r.Put))
	for _, b := range cur {
		if b.Expires.After(now) && !r.names(b.Contact) && !(r.RemoveAll && !r.outOfOrder(b)) {
			out = append(out, b)
		}
	}
	for i, b := range r.Put {
		// the last of several bindings of one contact wins
		later := slices.ContainsFunc(r.Put[i+1:], func(l Binding) bool { return l.Contact == b.Contact })
		if b.Expires.After(now) && !later {
			out = append(out, b)
		}
	}
	return live(out, now), nil
}

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

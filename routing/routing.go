// Package routing is the dial plan: a plain request (who calls, what was
// dialled, from which agency) goes in, a decision (whom to ring, how, for how
// long) comes out. It never sees a SIP message, so it is tested with tables.
package routing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lineamica/centralino/routing/directory"
)

// Request is what the proxy knows about a new call.
type Request struct {
	Caller       string // username of an authenticated caller, or the caller's number
	CallerAgency string // IPA code of the caller's agency; "" when unknown
	Dialled      string // user part of the Request-URI
	Time         time.Time
}

// Target is one user to ring; the proxy turns it into that user's contacts.
type Target struct {
	Username string
	Agency   string
}

// Decision says how to handle a call. Status is non-zero when the call is to
// be answered with a final response instead of ringing anyone.
type Decision struct {
	Targets     []Target
	Parallel    bool // ring all targets at once; otherwise one after another
	RingTimeout time.Duration
	DestAgency  string // IPA code of the agency reached, for metrics and events
	Status      int
	Reason      string
}

// Router turns requests into decisions.
type Router struct {
	Dir         directory.Store
	RingTimeout time.Duration
}

// Route decides where a call goes. The numbering plan, in order:
//  1. a username (sip:campania.rossi@...) rings that user;
//  2. an agency's public number rings its operators, all at once;
//  3. a short extension rings that extension in the caller's own agency;
//  4. a full number (agency prefix + extension) rings that user.
//
// An error is returned only when the directory fails; a number that leads
// nowhere is a Decision with Status 404.
func (r *Router) Route(ctx context.Context, req Request) (Decision, error) {
	d := req.Dialled
	if d == "" {
		return reject(404, "No number dialled"), nil
	}
	if u, err := r.Dir.User(ctx, d); err == nil {
		return r.ringUser(u), nil
	} else if !errors.Is(err, directory.ErrNotFound) {
		return Decision{}, err
	}
	if a, err := r.Dir.AgencyByNumber(ctx, d); err == nil {
		return r.ringOperators(ctx, a)
	} else if !errors.Is(err, directory.ErrNotFound) {
		return Decision{}, err
	}
	if req.CallerAgency != "" {
		if u, err := r.Dir.UserByExtension(ctx, req.CallerAgency, d); err == nil {
			return r.ringUser(u), nil
		} else if !errors.Is(err, directory.ErrNotFound) {
			return Decision{}, err
		}
	}
	// Longest prefix first, so that a sub-office (8110) wins over its parent (81).
	for i := len(d) - 1; i > 0; i-- {
		a, err := r.Dir.AgencyByPrefix(ctx, d[:i])
		if errors.Is(err, directory.ErrNotFound) {
			continue
		}
		if err != nil {
			return Decision{}, err
		}
		u, err := r.Dir.UserByExtension(ctx, a.Code, d[i:])
		if err == nil {
			return r.ringUser(u), nil
		}
		if !errors.Is(err, directory.ErrNotFound) {
			return Decision{}, err
		}
		break
	}
	return reject(404, "Not Found"), nil
}

func (r *Router) ringUser(u directory.User) Decision {
	return Decision{
		Targets:     []Target{{Username: u.Username, Agency: u.Agency}},
		Parallel:    true,
		RingTimeout: r.RingTimeout,
		DestAgency:  u.Agency,
	}
}

func (r *Router) ringOperators(ctx context.Context, a directory.Agency) (Decision, error) {
	users, err := r.Dir.Users(ctx, a.Code)
	if err != nil {
		return Decision{}, fmt.Errorf("routing: operators of %s: %w", a.Code, err)
	}
	dec := Decision{Parallel: true, RingTimeout: r.RingTimeout, DestAgency: a.Code}
	for _, u := range users {
		if u.Role == directory.RoleOperator {
			dec.Targets = append(dec.Targets, Target{Username: u.Username, Agency: a.Code})
		}
	}
	if len(dec.Targets) == 0 {
		dec.Status, dec.Reason = 480, "No operator available"
	}
	return dec, nil
}

func reject(status int, reason string) Decision {
	return Decision{Status: status, Reason: reason}
}

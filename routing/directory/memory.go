package directory

import (
	"context"
	"slices"
	"sync"
	"time"
)

// sweepInterval is how often a write to Memory drops all expired bindings;
// reads skip expired ones anyway, so this only bounds memory.
const sweepInterval = time.Minute

// Memory is a Store held in process memory: the single-node default.
// Nothing survives a restart.
type Memory struct {
	mu        sync.RWMutex
	agencies  map[string]Agency    // by code
	byNumber  map[string]string    // public number → agency code
	byPrefix  map[string]string    // prefix → agency code
	users     map[string]User      // by username
	byExt     map[extKey]string    // (agency, extension) → username
	bindings  map[string][]Binding // AOR → bindings sorted by contact (a slice: phones have 1–3)
	nextSweep time.Time
}

type extKey struct{ agency, extension string }

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{
		agencies: make(map[string]Agency),
		byNumber: make(map[string]string),
		byPrefix: make(map[string]string),
		users:    make(map[string]User),
		byExt:    make(map[extKey]string),
		bindings: make(map[string][]Binding),
	}
}

func (m *Memory) Agency(_ context.Context, code string) (Agency, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.agency(code, "agency", code)
}

func (m *Memory) AgencyByNumber(_ context.Context, number string) (Agency, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.agency(m.byNumber[number], "number", number)
}

func (m *Memory) AgencyByPrefix(_ context.Context, prefix string) (Agency, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.agency(m.byPrefix[prefix], "prefix", prefix)
}

// agency returns a copy of the agency with code; kind and key name the lookup
// in the error.
func (m *Memory) agency(code, kind, key string) (Agency, error) {
	a, ok := m.agencies[code]
	if !ok {
		return Agency{}, notFound(kind, key)
	}
	return cloneAgency(a), nil
}

func (m *Memory) Agencies(context.Context) ([]Agency, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Agency, 0, len(m.agencies))
	for _, a := range m.agencies {
		out = append(out, cloneAgency(a))
	}
	return sortAgencies(out), nil
}

func (m *Memory) PutAgency(_ context.Context, a Agency) error {
	if err := checkAgency(a); err != nil {
		return err
	}
	a = cloneAgency(a)
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.agencies[a.Code]; ok {
		m.unindexAgency(old, a)
	}
	m.agencies[a.Code] = a
	for _, n := range a.Numbers {
		if n != "" {
			m.byNumber[n] = a.Code
		}
	}
	if a.Prefix != "" {
		m.byPrefix[a.Prefix] = a.Code
	}
	return nil
}

// DeleteAgency removes the agency and its number and prefix indexes. Its users
// stay: they are deleted on their own.
func (m *Memory) DeleteAgency(_ context.Context, code string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.agencies[code]
	if !ok {
		return notFound("agency", code)
	}
	delete(m.agencies, code)
	m.unindexAgency(old, Agency{})
	return nil
}

// unindexAgency drops the index entries of old that cur no longer has, unless
// another agency has taken them over meanwhile.
func (m *Memory) unindexAgency(old, cur Agency) {
	for _, n := range dropped(old.Numbers, cur.Numbers) {
		deleteIf(m.byNumber, n, old.Code)
	}
	for _, p := range dropped([]string{old.Prefix}, []string{cur.Prefix}) {
		deleteIf(m.byPrefix, p, old.Code)
	}
}

func (m *Memory) User(_ context.Context, username string) (User, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u, ok := m.users[username]
	if !ok {
		return User{}, notFound("user", username)
	}
	return u, nil
}

func (m *Memory) UserByExtension(_ context.Context, agency, extension string) (User, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u, ok := m.users[m.byExt[extKey{agency, extension}]]
	if !ok {
		return User{}, notFound("extension", agency+"/"+extension)
	}
	return u, nil
}

func (m *Memory) Users(_ context.Context, agency string) ([]User, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []User
	for _, u := range m.users {
		if agency == "" || u.Agency == agency {
			out = append(out, u)
		}
	}
	return sortUsers(out), nil
}

func (m *Memory) PutUser(_ context.Context, u User) error {
	if err := checkUser(u); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.users[u.Username]; ok {
		deleteIf(m.byExt, extKey{old.Agency, old.Extension}, old.Username)
	}
	m.users[u.Username] = u
	if u.Extension != "" {
		m.byExt[extKey{u.Agency, u.Extension}] = u.Username
	}
	return nil
}

// DeleteUser removes the user, its extension index and its bindings, so a
// deleted account stops ringing at once.
func (m *Memory) DeleteUser(_ context.Context, username string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.users[username]
	if !ok {
		return notFound("user", username)
	}
	delete(m.users, username)
	deleteIf(m.byExt, extKey{old.Agency, old.Extension}, username)
	delete(m.bindings, username)
	return nil
}

func (m *Memory) Bindings(_ context.Context, aor string) ([]Binding, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return live(slices.Clone(m.bindings[aor]), time.Now()), nil
}

// PutBinding stores b; a binding that has already expired removes the
// contact instead, like a REGISTER with Expires: 0.
func (m *Memory) PutBinding(_ context.Context, b Binding) error {
	b, err := checkBinding(b)
	if err != nil {
		return err
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	bs := slices.DeleteFunc(slices.Clone(m.bindings[b.AOR]), func(o Binding) bool { return o.Contact == b.Contact })
	if b.Expires.After(now) {
		bs = live(append(bs, b), now)
	}
	m.setBindings(b.AOR, bs, now)
	return nil
}

// DeleteBinding is idempotent: removing a missing binding is not an error.
func (m *Memory) DeleteBinding(_ context.Context, aor, contact string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	bs := slices.DeleteFunc(slices.Clone(m.bindings[aor]), func(o Binding) bool { return o.Contact == contact })
	m.setBindings(aor, bs, time.Now())
	return nil
}

func (m *Memory) Register(_ context.Context, r Registration) (before, after []Binding, err error) {
	if r, err = checkRegistration(r); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.bindings[r.AOR]
	if after, err = applyRegistration(cur, r, now); err != nil {
		return nil, nil, err
	}
	// The stored slices are never modified in place, so cur can be handed out.
	m.setBindings(r.AOR, after, now)
	return live(cur, now), slices.Clone(after), nil
}

// setBindings replaces the bindings of aor (the store keeps bs) and now and
// then drops every expired binding. Callers hold m.mu.
func (m *Memory) setBindings(aor string, bs []Binding, now time.Time) {
	if len(bs) == 0 {
		delete(m.bindings, aor)
	} else {
		m.bindings[aor] = slices.Clip(bs)
	}
	if now.After(m.nextSweep) {
		for aor, bs := range m.bindings {
			if kept := live(slices.Clone(bs), now); len(kept) < len(bs) {
				m.setBindings(aor, kept, time.Time{})
			}
		}
		m.nextSweep = now.Add(sweepInterval)
	}
}

func (m *Memory) AllBindings(context.Context) ([]Binding, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Binding
	for _, bs := range m.bindings {
		out = append(out, bs...)
	}
	return live(out, time.Now()), nil
}

func (m *Memory) Ping(context.Context) error { return nil }

func (m *Memory) Close() error { return nil }

// deleteIf deletes m[k] only if it still maps to v.
func deleteIf[K, V comparable](m map[K]V, k K, v V) {
	if cur, ok := m[k]; ok && cur == v {
		delete(m, k)
	}
}

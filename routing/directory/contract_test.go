package directory

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

// testStore is the contract every Store implementation must pass. newStore
// returns an empty store and arranges for it to be closed.
func testStore(t *testing.T, newStore func(t *testing.T) Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"NotFound", testNotFound},
		{"Invalid", testInvalid},
		{"Agencies", testAgencies},
		{"AgencyNumberTakeover", testAgencyNumberTakeover},
		{"Users", testUsers},
		{"UserMoves", testUserMoves},
		{"Bindings", testBindings},
		{"BindingExpiry", testBindingExpiry},
		{"Register", testRegister},
		{"Concurrency", testConcurrency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}

var (
	campania = Agency{
		Code: "r_campan", Name: "URP Regione Campania", Region: "Campania", Sector: "general",
		Prefix: "0811", Numbers: []string{"0817961111", "800123456"}, Overflow: "linea_amica",
	}
	inps = Agency{Code: "inps", Name: "INPS", Sector: "pensions", Prefix: "0659", Numbers: []string{"803164"}}
)

func user(name, agency, ext string) User {
	u := User{Username: name, DisplayName: "User " + name, Agency: agency, Role: RolePhone, Extension: ext}
	u.SetPassword("centralino.test", "secret-"+name)
	return u
}

// binding expires ttl from now, in the UTC form stores return.
func binding(aor, contact string, ttl time.Duration) Binding {
	return Binding{
		AOR: aor, Contact: contact, Source: "192.0.2.10:5060", Flow: true, Transport: "udp", Node: "napoli-1",
		CallID: "call-" + contact, CSeq: 1, UserAgent: "test", Expires: time.Now().Add(ttl).UTC(),
	}
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("%s: err = %v, want ErrNotFound", what, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantEqual[T any](t *testing.T, what string, got T, err error, want T) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	// nil and empty slices are the same answer.
	if v, w := reflect.ValueOf(got), reflect.ValueOf(want); v.Kind() == reflect.Slice && v.Len() == 0 && w.Len() == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func testNotFound(t *testing.T, s Store) {
	ctx := t.Context()
	_, err := s.Agency(ctx, "nope")
	wantNotFound(t, "Agency", err)
	_, err = s.AgencyByNumber(ctx, "000")
	wantNotFound(t, "AgencyByNumber", err)
	_, err = s.AgencyByPrefix(ctx, "000")
	wantNotFound(t, "AgencyByPrefix", err)
	_, err = s.AgencyByPrefix(ctx, "")
	wantNotFound(t, "AgencyByPrefix empty", err)
	_, err = s.User(ctx, "nope")
	wantNotFound(t, "User", err)
	_, err = s.UserByExtension(ctx, "nope", "100")
	wantNotFound(t, "UserByExtension", err)
	wantNotFound(t, "DeleteAgency", s.DeleteAgency(ctx, "nope"))
	wantNotFound(t, "DeleteUser", s.DeleteUser(ctx, "nope"))
	if err := s.DeleteBinding(ctx, "nope", "sip:nope@192.0.2.1"); err != nil {
		t.Errorf("DeleteBinding of a missing binding: %v, want nil", err)
	}
	for what, f := range map[string]func() (int, error){
		"Agencies":    func() (int, error) { as, err := s.Agencies(ctx); return len(as), err },
		"Users":       func() (int, error) { us, err := s.Users(ctx, ""); return len(us), err },
		"Bindings":    func() (int, error) { bs, err := s.Bindings(ctx, "nope"); return len(bs), err },
		"AllBindings": func() (int, error) { bs, err := s.AllBindings(ctx); return len(bs), err },
	} {
		if n, err := f(); n != 0 || err != nil {
			t.Errorf("%s on an empty store = %d items, %v; want none, nil", what, n, err)
		}
	}
	must(t, s.Ping(ctx))
}

func testInvalid(t *testing.T, s Store) {
	ctx := t.Context()
	if err := s.PutAgency(ctx, Agency{Name: "no code"}); err == nil {
		t.Error("PutAgency without code succeeded")
	}
	if err := s.PutUser(ctx, User{Agency: "inps"}); err == nil {
		t.Error("PutUser without username succeeded")
	}
	if err := s.PutBinding(ctx, binding("mario", "", time.Hour)); err == nil {
		t.Error("PutBinding without contact succeeded")
	}
	if err := s.PutBinding(ctx, binding("", "sip:x@192.0.2.1", time.Hour)); err == nil {
		t.Error("PutBinding without AOR succeeded")
	}
}

func testAgencies(t *testing.T, s Store) {
	ctx := t.Context()
	in := cloneAgency(campania)
	must(t, s.PutAgency(ctx, in))
	must(t, s.PutAgency(ctx, inps))
	in.Numbers[0] = "mutated after put"

	got, err := s.Agency(ctx, campania.Code)
	wantEqual(t, "Agency", got, err, campania)
	got.Numbers[0] = "mutated after get"
	got, err = s.AgencyByNumber(ctx, "800123456")
	wantEqual(t, "AgencyByNumber", got, err, campania)
	got, err = s.AgencyByPrefix(ctx, "0659")
	wantEqual(t, "AgencyByPrefix", got, err, inps)
	all, err := s.Agencies(ctx)
	wantEqual(t, "Agencies", all, err, []Agency{inps, campania})
	all[0].Numbers[0] = "mutated list"
	got, err = s.Agency(ctx, inps.Code)
	wantEqual(t, "Agency after mutating the list", got, err, inps)

	// Replace: the dropped number and the old prefix leave the indexes.
	moved := cloneAgency(campania)
	moved.Name, moved.Prefix, moved.Numbers = "URP Campania", "0812", []string{"800123456", "0817962222"}
	must(t, s.PutAgency(ctx, moved))
	got, err = s.Agency(ctx, campania.Code)
	wantEqual(t, "Agency after replace", got, err, moved)
	_, err = s.AgencyByNumber(ctx, "0817961111")
	wantNotFound(t, "AgencyByNumber of a dropped number", err)
	_, err = s.AgencyByPrefix(ctx, "0811")
	wantNotFound(t, "AgencyByPrefix of the old prefix", err)
	got, err = s.AgencyByNumber(ctx, "0817962222")
	wantEqual(t, "AgencyByNumber of a new number", got, err, moved)
	got, err = s.AgencyByNumber(ctx, "800123456")
	wantEqual(t, "AgencyByNumber of a kept number", got, err, moved)
	got, err = s.AgencyByPrefix(ctx, "0812")
	wantEqual(t, "AgencyByPrefix of the new prefix", got, err, moved)
	all, err = s.Agencies(ctx)
	wantEqual(t, "Agencies after replace", all, err, []Agency{inps, moved})

	must(t, s.DeleteAgency(ctx, campania.Code))
	_, err = s.Agency(ctx, campania.Code)
	wantNotFound(t, "Agency after delete", err)
	_, err = s.AgencyByNumber(ctx, "800123456")
	wantNotFound(t, "AgencyByNumber after delete", err)
	_, err = s.AgencyByPrefix(ctx, "0812")
	wantNotFound(t, "AgencyByPrefix after delete", err)
	all, err = s.Agencies(ctx)
	wantEqual(t, "Agencies after delete", all, err, []Agency{inps})
}

// A number moved to another agency stays with it when the first agency is
// later updated or deleted.
func testAgencyNumberTakeover(t *testing.T, s Store) {
	ctx := t.Context()
	a := Agency{Code: "a", Numbers: []string{"111", "222"}, Prefix: "9"}
	b := Agency{Code: "b", Numbers: []string{"222"}, Prefix: "9"}
	must(t, s.PutAgency(ctx, a))
	must(t, s.PutAgency(ctx, b))
	a.Numbers, a.Prefix = []string{"111"}, "8"
	must(t, s.PutAgency(ctx, a))
	got, err := s.AgencyByNumber(ctx, "222")
	wantEqual(t, "number taken over", got, err, b)
	got, err = s.AgencyByPrefix(ctx, "9")
	wantEqual(t, "prefix taken over", got, err, b)
	must(t, s.DeleteAgency(ctx, "a"))
	got, err = s.AgencyByNumber(ctx, "222")
	wantEqual(t, "number taken over, after deleting the first owner", got, err, b)
}

func testUsers(t *testing.T, s Store) {
	ctx := t.Context()
	mario, anna, luca := user("mario", "r_campan", "100"), user("anna", "r_campan", "101"), user("luca", "inps", "100")
	for _, u := range []User{mario, anna, luca} {
		must(t, s.PutUser(ctx, u))
	}
	got, err := s.User(ctx, "mario")
	wantEqual(t, "User", got, err, mario)
	got, err = s.UserByExtension(ctx, "inps", "100")
	wantEqual(t, "UserByExtension", got, err, luca)
	_, err = s.UserByExtension(ctx, "inps", "101")
	wantNotFound(t, "UserByExtension in another agency", err)
	list, err := s.Users(ctx, "r_campan")
	wantEqual(t, "Users(agency)", list, err, []User{anna, mario})
	list, err = s.Users(ctx, "")
	wantEqual(t, "Users(all)", list, err, []User{anna, luca, mario})

	// Replace with a new extension: the old one no longer resolves.
	mario.Extension, mario.DisplayName = "200", "Mario Rossi"
	must(t, s.PutUser(ctx, mario))
	got, err = s.User(ctx, "mario")
	wantEqual(t, "User after replace", got, err, mario)
	_, err = s.UserByExtension(ctx, "r_campan", "100")
	wantNotFound(t, "UserByExtension of the old extension", err)
	got, err = s.UserByExtension(ctx, "r_campan", "200")
	wantEqual(t, "UserByExtension of the new extension", got, err, mario)

	// An extension moved to another user stays with it.
	anna.Extension = "200"
	must(t, s.PutUser(ctx, anna))
	mario.Extension = ""
	must(t, s.PutUser(ctx, mario))
	got, err = s.UserByExtension(ctx, "r_campan", "200")
	wantEqual(t, "extension taken over", got, err, anna)

	// Delete drops the user, its extension and its bindings.
	must(t, s.PutBinding(ctx, binding("anna", "sip:anna@192.0.2.1", time.Hour)))
	must(t, s.DeleteUser(ctx, "anna"))
	_, err = s.User(ctx, "anna")
	wantNotFound(t, "User after delete", err)
	_, err = s.UserByExtension(ctx, "r_campan", "200")
	wantNotFound(t, "UserByExtension after delete", err)
	list, err = s.Users(ctx, "r_campan")
	wantEqual(t, "Users after delete", list, err, []User{mario})
	bs, err := s.Bindings(ctx, "anna")
	if len(bs) != 0 || err != nil {
		t.Errorf("Bindings of a deleted user = %v, %v; want none", bs, err)
	}
}

// A user moved to another agency leaves the old agency's list and extension.
func testUserMoves(t *testing.T, s Store) {
	ctx := t.Context()
	u := user("sara", "r_campan", "300")
	must(t, s.PutUser(ctx, u))
	u.Agency = "inps"
	must(t, s.PutUser(ctx, u))
	_, err := s.UserByExtension(ctx, "r_campan", "300")
	wantNotFound(t, "UserByExtension in the old agency", err)
	got, err := s.UserByExtension(ctx, "inps", "300")
	wantEqual(t, "UserByExtension in the new agency", got, err, u)
	list, err := s.Users(ctx, "r_campan")
	wantEqual(t, "Users of the old agency", list, err, []User(nil))
	list, err = s.Users(ctx, "inps")
	wantEqual(t, "Users of the new agency", list, err, []User{u})

	// DeleteAgency leaves the agency's users alone.
	must(t, s.PutAgency(ctx, inps))
	must(t, s.DeleteAgency(ctx, "inps"))
	got, err = s.User(ctx, "sara")
	wantEqual(t, "User after deleting its agency", got, err, u)
}

func testBindings(t *testing.T, s Store) {
	ctx := t.Context()
	desk := binding("mario", "sip:mario@192.0.2.10:5060", time.Hour)
	soft := binding("mario", "sip:mario@198.51.100.7:40000;transport=tcp", time.Hour)
	anna := binding("anna", "sip:anna@192.0.2.11", time.Hour)
	for _, b := range []Binding{desk, soft, anna} {
		must(t, s.PutBinding(ctx, b))
	}
	bs, err := s.Bindings(ctx, "mario")
	wantEqual(t, "Bindings: several contacts", bs, err, []Binding{desk, soft})

	// Same (AOR, Contact): replaced, not added.
	desk.CSeq, desk.Source, desk.Expires = 2, "192.0.2.10:5062", desk.Expires.Add(time.Minute)
	must(t, s.PutBinding(ctx, desk))
	bs, err = s.Bindings(ctx, "mario")
	wantEqual(t, "Bindings after re-register", bs, err, []Binding{desk, soft})
	bs[0].Contact = "mutated"
	all, err := s.AllBindings(ctx)
	wantEqual(t, "AllBindings", all, err, []Binding{anna, desk, soft})

	// Expires in the past unregisters that contact only.
	gone := soft
	gone.Expires = time.Now().Add(-time.Second).UTC()
	must(t, s.PutBinding(ctx, gone))
	bs, err = s.Bindings(ctx, "mario")
	wantEqual(t, "Bindings after expires=0", bs, err, []Binding{desk})

	must(t, s.DeleteBinding(ctx, "mario", desk.Contact))
	bs, err = s.Bindings(ctx, "mario")
	wantEqual(t, "Bindings after delete", bs, err, []Binding(nil))
	all, err = s.AllBindings(ctx)
	wantEqual(t, "AllBindings after delete", all, err, []Binding{anna})
}

func testBindingExpiry(t *testing.T, s Store) {
	ctx := t.Context()
	short := binding("mario", "sip:mario@192.0.2.10", time.Second)
	long := binding("mario", "sip:mario@192.0.2.20", time.Hour)
	alone := binding("anna", "sip:anna@192.0.2.11", time.Second)
	for _, b := range []Binding{short, long, alone} {
		must(t, s.PutBinding(ctx, b))
	}
	time.Sleep(1500 * time.Millisecond)
	bs, err := s.Bindings(ctx, "mario")
	wantEqual(t, "Bindings after expiry", bs, err, []Binding{long})
	bs, err = s.Bindings(ctx, "anna")
	wantEqual(t, "Bindings of an all-expired AOR", bs, err, []Binding(nil))
	all, err := s.AllBindings(ctx)
	wantEqual(t, "AllBindings after expiry", all, err, []Binding{long})
}

func testRegister(t *testing.T, s Store) {
	ctx := t.Context()
	reg := func(cid string, seq uint32, put ...Binding) Registration {
		for i := range put {
			put[i].CallID, put[i].CSeq = cid, seq
		}
		return Registration{AOR: "mario", CallID: cid, CSeq: seq, Put: put}
	}
	check := func(what string, r Registration, wantBefore, wantAfter []Binding) {
		t.Helper()
		before, after, err := s.Register(ctx, r)
		wantEqual(t, what+": before", before, err, wantBefore)
		wantEqual(t, what+": after", after, err, wantAfter)
		bs, err := s.Bindings(ctx, "mario")
		wantEqual(t, what+": Bindings", bs, err, wantAfter)
	}
	desk := binding("mario", "sip:mario@192.0.2.10:5060", time.Hour)
	soft := binding("mario", "sip:mario@198.51.100.7:40000;transport=tcp", time.Hour)
	r1 := reg("a", 1, desk)
	desk = r1.Put[0]
	check("first", r1, nil, []Binding{desk})

	// A retransmission or a late copy of the same request is refused whole.
	late := reg("a", 1, desk, soft)
	if _, _, err := s.Register(ctx, late); !errors.Is(err, ErrOutOfOrder) {
		t.Errorf("Register of an old CSeq: %v, want ErrOutOfOrder", err)
	}
	bs, err := s.Bindings(ctx, "mario")
	wantEqual(t, "Bindings after an out-of-order Register", bs, err, []Binding{desk})

	r2 := reg("a", 2, desk, soft)
	desk2, soft2 := r2.Put[0], r2.Put[1]
	desk2.Expires = desk2.Expires.Add(time.Minute)
	r2.Put[0] = desk2
	check("refresh and add", r2, []Binding{desk}, []Binding{desk2, soft2})

	// Another phone's REGISTER (Call-ID b) removes one contact; an expired
	// binding in Put removes its contact too.
	gone := desk2
	gone.Expires = time.Now().Add(-time.Second).UTC()
	check("remove", Registration{AOR: "mario", CallID: "b", CSeq: 1, Remove: []string{soft2.Contact}}, []Binding{desk2, soft2}, []Binding{desk2})
	check("expired put", reg("b", 2, gone), []Binding{desk2}, nil)

	// Contact: * leaves the bindings that the same Call-ID registered later.
	check("again", reg("c", 5, soft), nil, []Binding{reg("c", 5, soft).Put[0]})
	check("other", reg("d", 1, desk), []Binding{reg("c", 5, soft).Put[0]}, []Binding{reg("d", 1, desk).Put[0], reg("c", 5, soft).Put[0]})
	check("wildcard", Registration{AOR: "mario", CallID: "c", CSeq: 3, RemoveAll: true},
		[]Binding{reg("d", 1, desk).Put[0], reg("c", 5, soft).Put[0]}, []Binding{reg("c", 5, soft).Put[0]})

	if _, _, err := s.Register(ctx, Registration{AOR: "mario", Put: []Binding{binding("anna", "sip:anna@192.0.2.11", time.Hour)}}); err == nil {
		t.Error("Register of another AOR's binding succeeded")
	}
	all, err := s.AllBindings(ctx)
	wantEqual(t, "AllBindings after Register", all, err, []Binding{reg("c", 5, soft).Put[0]})
}

// testConcurrency is a smoke test for -race: writers and readers on shared
// and separate keys, then a check that every write landed.
func testConcurrency(t *testing.T, s Store) {
	ctx := t.Context()
	must(t, s.PutAgency(ctx, campania))
	const workers, rounds = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			errs <- hammer(ctx, s, w, rounds)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	users, err := s.Users(ctx, campania.Code)
	if err != nil || len(users) != workers {
		t.Fatalf("Users = %d, %v; want %d", len(users), err, workers)
	}
	all, err := s.AllBindings(ctx)
	if err != nil || len(all) != workers*rounds {
		t.Fatalf("AllBindings = %d, %v; want %d", len(all), err, workers*rounds)
	}
}

func hammer(ctx context.Context, s Store, w, rounds int) error {
	name := fmt.Sprintf("u%d", w)
	ext := func(i int) string { return fmt.Sprintf("%d%02d", w+1, i) }
	for i := range rounds {
		if err := s.PutUser(ctx, user(name, campania.Code, ext(i))); err != nil {
			return err
		}
		if err := s.PutBinding(ctx, binding(name, fmt.Sprintf("sip:%s@192.0.2.1:%d", name, 5000+i), time.Hour)); err != nil {
			return err
		}
		if _, err := s.User(ctx, name); err != nil {
			return err
		}
		if _, err := s.AgencyByNumber(ctx, campania.Numbers[0]); err != nil {
			return err
		}
		if _, err := s.Bindings(ctx, name); err != nil {
			return err
		}
		if _, err := s.Users(ctx, ""); err != nil {
			return err
		}
	}
	if got, err := s.UserByExtension(ctx, campania.Code, ext(rounds-1)); err != nil || got.Username != name {
		return fmt.Errorf("UserByExtension(%s) = %q, %v; want %s", ext(rounds-1), got.Username, err, name)
	}
	if _, err := s.UserByExtension(ctx, campania.Code, ext(0)); !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("UserByExtension of a replaced extension %s: %v, want ErrNotFound", ext(0), err)
	}
	return nil
}

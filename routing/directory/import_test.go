package directory

import "testing"

func TestLoad(t *testing.T) {
	ctx := t.Context()
	s := NewMemory()
	users := []User{user("mario", "r_campan", "100"), user("luca", "inps", "100")}
	must(t, Load(ctx, s, []Agency{campania, inps}, users))
	must(t, Load(ctx, s, []Agency{campania, inps}, users)) // idempotent
	as, err := s.Agencies(ctx)
	wantEqual(t, "Agencies", as, err, []Agency{inps, campania})
	us, err := s.Users(ctx, "")
	wantEqual(t, "Users", us, err, []User{users[1], users[0]})

	err = Load(ctx, s, nil, []User{{DisplayName: "no username"}})
	if err == nil {
		t.Fatal("Load of an invalid user succeeded")
	}
}

package routing

import (
	"fmt"
	"testing"
	"time"
)

// at is a wall-clock time in Rome: "2026-04-06 10:00".
func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.ParseInLocation(time.DateTime[:16], s, rome)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustHours(t *testing.T, week string, closures ...string) Hours {
	t.Helper()
	h, err := ParseHours(week, closures)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestOpen(t *testing.T) {
	urp := mustHours(t, "mon-fri 08:30-13:30, tue,thu 14:30-17:00", "09-19", "2026-12-24")
	night := mustHours(t, "sun 01:00-04:00") // straddles both summer-time changes
	always := mustHours(t, "", "12-25")
	tests := []struct {
		name string
		h    Hours
		t    time.Time
		want bool
	}{
		{"weekday morning", urp, at(t, "2026-03-02 10:00"), true},
		{"before opening", urp, at(t, "2026-03-02 08:29"), false},
		{"at opening", urp, at(t, "2026-03-02 08:30"), true},
		{"at closing", urp, at(t, "2026-03-02 13:30"), false},
		{"lunch gap", urp, at(t, "2026-03-03 14:00"), false},
		{"tuesday afternoon", urp, at(t, "2026-03-03 15:00"), true},
		{"monday afternoon", urp, at(t, "2026-03-02 15:00"), false},
		{"saturday", urp, at(t, "2026-03-07 10:00"), false},
		{"sunday", urp, at(t, "2026-03-08 10:00"), false},
		{"winter time, 07:30 UTC is 08:30", urp, time.Date(2026, 3, 27, 7, 30, 0, 0, time.UTC), true},
		{"winter time, 07:29 UTC is 08:29", urp, time.Date(2026, 3, 27, 7, 29, 0, 0, time.UTC), false},
		{"summer time, 06:30 UTC is 08:30", urp, time.Date(2026, 3, 30, 6, 30, 0, 0, time.UTC), true},
		{"summer time, 06:29 UTC is 08:29", urp, time.Date(2026, 3, 30, 6, 29, 0, 0, time.UTC), false},
		{"spring DST day, 01:30 CET", night, time.Date(2026, 3, 29, 0, 30, 0, 0, time.UTC), true},
		{"spring DST day, 03:30 CEST", night, time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC), true},
		{"spring DST day, 04:00 CEST", night, time.Date(2026, 3, 29, 2, 0, 0, 0, time.UTC), false},
		{"autumn DST day, 00:30 CEST", night, time.Date(2026, 10, 24, 22, 30, 0, 0, time.UTC), false},
		{"autumn DST day, second 02:30 CET", night, time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC), true},
		{"autumn DST day, 04:00 CET", night, time.Date(2026, 10, 25, 3, 0, 0, 0, time.UTC), false},
		{"Easter Monday 2026", urp, at(t, "2026-04-06 10:00"), false},
		{"day after Easter Monday 2026", urp, at(t, "2026-04-07 10:00"), true},
		{"Easter Monday 2027", urp, at(t, "2027-03-29 10:00"), false},
		{"Liberazione", urp, at(t, "2025-04-25 10:00"), false},
		{"Festa della Repubblica", urp, at(t, "2026-06-02 10:00"), false},
		{"San Francesco from 2027 on a weekday", urp, at(t, "2027-10-04 10:00"), false},
		{"patron saint every year", urp, at(t, "2025-09-19 10:00"), false},
		{"closure of one year", urp, at(t, "2026-12-24 10:00"), false},
		{"closure of one year, not the next", urp, at(t, "2025-12-24 10:00"), true},
		{"no hours: open at night", always, at(t, "2026-03-07 03:00"), true},
		{"no hours: open on holidays", always, at(t, "2026-04-06 10:00"), true},
		{"no hours: closures apply", always, at(t, "2026-12-25 10:00"), false},
	}
	for _, tt := range tests {
		if got := tt.h.Open(tt.t); got != tt.want {
			t.Errorf("%s: Open(%s) = %v, want %v", tt.name, tt.t, got, tt.want)
		}
	}
}

func TestNextOpen(t *testing.T) {
	urp := mustHours(t, "mon-fri 08:30-13:30, tue,thu 14:30-17:00")
	tests := []struct {
		name     string
		from     time.Time
		want     time.Time
		wantOpen bool
	}{
		{"open now", at(t, "2026-03-02 10:00"), at(t, "2026-03-02 10:00"), true},
		{"lunch", at(t, "2026-03-03 13:45"), at(t, "2026-03-03 14:30"), true},
		{"friday evening", at(t, "2026-03-06 18:00"), at(t, "2026-03-09 08:30"), true},
		{"over Easter", at(t, "2026-04-04 10:00"), at(t, "2026-04-07 08:30"), true},
		{"over the change to summer time", at(t, "2026-03-28 20:00"), time.Date(2026, 3, 30, 6, 30, 0, 0, time.UTC), true},
	}
	for _, tt := range tests {
		got, ok := urp.NextOpen(tt.from)
		if ok != tt.wantOpen || !got.Equal(tt.want) {
			t.Errorf("%s: NextOpen(%s) = %s, %v; want %s", tt.name, tt.from, got, ok, tt.want)
		}
	}

	// Closing every Monday of the coming year leaves a Monday-only office
	// without an opening to announce.
	var mondays []string
	for d := at(t, "2026-03-02 00:00"); d.Year() < 2028; d = d.AddDate(0, 0, 7) {
		mondays = append(mondays, d.Format(time.DateOnly))
	}
	if next, ok := mustHours(t, "mon 08:00-09:00", mondays...).NextOpen(at(t, "2026-03-02 10:00")); ok {
		t.Errorf("NextOpen of an office closed all year = %s, want none", next)
	}
}

func TestHoliday(t *testing.T) {
	sundays := map[int]string{ // Easter
		1818: "03-22", 1943: "04-25", 2001: "04-15", 2019: "04-21", 2024: "03-31",
		2025: "04-20", 2026: "04-05", 2027: "03-28", 2038: "04-25",
	}
	for y, md := range sundays {
		sunday := at(t, fmt.Sprintf("%d-%s 12:00", y, md))
		if m, d := easter(y); m != sunday.Month() || d != sunday.Day() {
			t.Errorf("easter(%d) = %s %d, want %s", y, m, d, md)
		}
		for i, want := range []bool{false, true, true, false} { // Saturday to Tuesday
			if d := sunday.AddDate(0, 0, i-1); Holiday(d) != want {
				t.Errorf("Holiday(%s) = %v, want %v", d.Format(time.DateOnly), !want, want)
			}
		}
	}
	for _, tt := range []struct {
		day  string
		want bool
	}{
		{"2026-01-01", true}, {"2026-01-06", true}, {"2026-04-25", true}, {"2026-05-01", true},
		{"2026-06-02", true}, {"2026-08-15", true}, {"2026-11-01", true}, {"2026-12-08", true},
		{"2026-12-25", true}, {"2026-12-26", true}, {"2026-10-04", true},
		{"2025-10-04", false}, {"2026-11-04", false}, {"2026-03-19", false}, {"2026-12-24", false},
	} {
		if got := Holiday(at(t, tt.day+" 12:00")); got != tt.want {
			t.Errorf("Holiday(%s) = %v, want %v", tt.day, got, tt.want)
		}
	}
	// The day is the day in Rome: 23:30 UTC on 24 December is Christmas there.
	if !Holiday(time.Date(2026, 12, 24, 23, 30, 0, 0, time.UTC)) {
		t.Error("Holiday(2026-12-24 23:30 UTC) = false, want true")
	}
}

func TestParseHours(t *testing.T) {
	valid := []struct {
		week string
		open string // a time it is open, in Rome
	}{
		{"mon-fri 08:30-13:30 14:30-17:00", "2026-03-02 15:00"},
		{"mon-fri 08:30-13:30; tue,thu 14:30-17:00", "2026-03-05 15:00"},
		{"MON-FRI 08:30-13:30", "2026-03-02 10:00"},
		{"fri-mon 09:00-10:00", "2026-03-08 09:30"}, // a range that wraps round Sunday
		{"sat,sun 00:00-24:00", "2026-03-07 23:59"},
		{"  mon 08:00-09:00,,  tue\t10:00-11:00 ", "2026-03-03 10:30"},
		{"mon 08:00-09:00\ntue 10:00-11:00\n", "2026-03-03 10:30"}, // a YAML literal block
	}
	for _, tt := range valid {
		h, err := ParseHours(tt.week, nil)
		if err != nil {
			t.Errorf("ParseHours(%q): %v", tt.week, err)
		} else if !h.Open(at(t, tt.open)) {
			t.Errorf("ParseHours(%q) is closed at %s", tt.week, tt.open)
		}
	}

	invalid := []struct {
		week     string
		closures []string
		want     string
	}{
		{"mon-fri", nil, `hours: "mon-fri": days without intervals`},
		{"mon 08:00-12:00, sat", nil, `hours: "sat": days without intervals`},
		{"08:30-13:30", nil, `hours: "08:30-13:30": interval before any day`},
		{"mon-fri 8:30-13:30", nil, `hours: "8:30-13:30": want HH:MM-HH:MM`},
		{"mon-fri 08:30", nil, `hours: "08:30": want HH:MM-HH:MM`},
		{"mon 08:00-24:01", nil, `hours: "08:00-24:01": want HH:MM-HH:MM`},
		{"mon 08:60-09:00", nil, `hours: "08:60-09:00": want HH:MM-HH:MM`},
		{"mon 08:00-+9:00", nil, `hours: "08:00-+9:00": want HH:MM-HH:MM`},
		{"mon-fri 13:30-08:30", nil, `hours: "13:30-08:30": closes before it opens`},
		{"lun 08:00-12:00", nil, `hours: "lun": want a day (mon, tue, wed, thu, fri, sat, sun) or a range like mon-fri`},
		{"mon-xyz 08:00-12:00", nil, `hours: "mon-xyz": want a day (mon, tue, wed, thu, fri, sat, sun) or a range like mon-fri`},
		{"mon-fri 08:00-12:00, tue 11:00-13:00", nil, `hours: Tuesday: 11:00-13:00 overlaps 08:00-12:00`},
		{"mon 08:00-12:00", []string{"12-25", "2026-02-30"}, `closures[1]: "2026-02-30": want YYYY-MM-DD, or MM-DD for every year`},
		{"", []string{"19/09"}, `closures[0]: "19/09": want YYYY-MM-DD, or MM-DD for every year`},
	}
	for _, tt := range invalid {
		_, err := ParseHours(tt.week, tt.closures)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseHours(%q, %q) error = %v, want %s", tt.week, tt.closures, err, tt.want)
		}
	}
}

package routing

import (
	"fmt"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // Europe/Rome even on hosts without a zoneinfo database
	"unicode"
)

// rome is the time zone of every schedule: the network is Italian, and office
// hours are wall-clock times that follow summer time.
var rome = func() *time.Location {
	loc, err := time.LoadLocation("Europe/Rome")
	if err != nil {
		panic(err) // cannot happen: time/tzdata is embedded
	}
	return loc
}()

// Hours is an agency's opening schedule. Build it with ParseHours.
type Hours struct {
	week     [7][]span // by time.Weekday, sorted, not overlapping
	holidays bool      // closed on national holidays
	closures []closure
}

// span is an opening interval in minutes after midnight, from < to.
type span struct{ from, to int }

// closure is a closed day; year 0 repeats it every year (a patron saint).
type closure struct {
	year  int
	month time.Month
	day   int
}

const dayMinutes = 24 * 60

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseHours reads an agency's schedule: week as in directory.Agency.Hours,
// closures as in directory.Agency.Closures.
//
// week is a list of day groups, each followed by its intervals, separated by
// commas, semicolons or spaces: "mon-fri 08:30-13:30, tue,thu 14:30-17:00".
// A day group is days ("tue") and ranges ("mon-fri"); an interval is
// HH:MM-HH:MM within one day (24:00 ends at midnight). A day listed in several
// groups gets all their intervals. An empty week means always open, holidays
// included: a round-the-clock service, closed only on its closures.
//
// Errors name the field and fit on one line, e.g.
// `hours: "8:30-13:30": want HH:MM-HH:MM`.
func ParseHours(week string, closures []string) (Hours, error) {
	h := Hours{holidays: strings.TrimSpace(week) != ""}
	if !h.holidays {
		for d := range h.week {
			h.week[d] = []span{{0, dayMinutes}}
		}
	} else if err := h.parseWeek(week); err != nil {
		return Hours{}, fmt.Errorf("hours: %w", err)
	}
	for i, s := range closures {
		c, err := parseClosure(s)
		if err != nil {
			return Hours{}, fmt.Errorf("closures[%d]: %w", i, err)
		}
		h.closures = append(h.closures, c)
	}
	return h, nil
}

func (h *Hours) parseWeek(s string) error {
	sep := func(r rune) bool { return r == ',' || r == ';' || unicode.IsSpace(r) }
	var days []time.Weekday // the current day group
	group := ""             // its last day token, for the error
	timed := false          // whether the current group has intervals yet
	for _, tok := range strings.FieldsFunc(strings.ToLower(s), sep) {
		if tok[0] >= '0' && tok[0] <= '9' {
			sp, err := parseSpan(tok)
			if err != nil {
				return err
			}
			if len(days) == 0 {
				return fmt.Errorf("%q: interval before any day", tok)
			}
			for _, d := range days {
				h.week[d] = append(h.week[d], sp)
			}
			timed = true
			continue
		}
		if timed { // a day after intervals starts a new group
			days, timed = nil, false
		}
		ds, err := parseDays(tok)
		if err != nil {
			return err
		}
		days, group = append(days, ds...), tok
	}
	if !timed {
		return fmt.Errorf("%q: days without intervals", group)
	}
	for d, spans := range h.week {
		slices.SortFunc(spans, func(a, b span) int { return a.from - b.from })
		for i := 1; i < len(spans); i++ {
			if spans[i].from < spans[i-1].to {
				return fmt.Errorf("%s: %s overlaps %s", time.Weekday(d), spans[i], spans[i-1])
			}
		}
	}
	return nil
}

// parseDays reads "tue" or a range "mon-fri"; a range may wrap ("fri-mon").
func parseDays(tok string) ([]time.Weekday, error) {
	from, to, isRange := strings.Cut(tok, "-")
	first, ok1 := weekdays[from]
	last, ok2 := weekdays[to]
	if !isRange {
		last, ok2 = first, ok1
	}
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%q: want a day (mon, tue, wed, thu, fri, sat, sun) or a range like mon-fri", tok)
	}
	days := []time.Weekday{first}
	for d := first; d != last; {
		d = (d + 1) % 7
		days = append(days, d)
	}
	return days, nil
}

func parseSpan(tok string) (span, error) {
	from, to, _ := strings.Cut(tok, "-")
	f, ok1 := parseClock(from)
	t, ok2 := parseClock(to)
	if !ok1 || !ok2 {
		return span{}, fmt.Errorf("%q: want HH:MM-HH:MM", tok)
	}
	if f >= t {
		return span{}, fmt.Errorf("%q: closes before it opens", tok)
	}
	return span{f, t}, nil
}

// parseClock reads HH:MM as minutes after midnight, 00:00 to 24:00.
func parseClock(s string) (int, bool) {
	if s == "24:00" {
		return dayMinutes, true
	}
	t, err := time.Parse("15:04", s)
	if len(s) != len("15:04") || err != nil {
		return 0, false
	}
	return t.Hour()*60 + t.Minute(), true
}

func (s span) String() string {
	return fmt.Sprintf("%02d:%02d-%02d:%02d", s.from/60, s.from%60, s.to/60, s.to%60)
}

// parseClosure reads "2026-12-24" (that day) or "09-19" (every year).
func parseClosure(s string) (closure, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return closure{t.Year(), t.Month(), t.Day()}, nil
	}
	// Year 0 is a leap year, so "02-29" parses and matches leap years only.
	if t, err := time.Parse("01-02", s); err == nil {
		return closure{0, t.Month(), t.Day()}, nil
	}
	return closure{}, fmt.Errorf("%q: want YYYY-MM-DD, or MM-DD for every year", s)
}

// Open reports whether the agency is open at t.
func (h Hours) Open(t time.Time) bool {
	t = t.In(rome)
	if h.closed(t) {
		return false
	}
	m := t.Hour()*60 + t.Minute()
	for _, s := range h.week[t.Weekday()] {
		if s.from <= m && m < s.to {
			return true
		}
	}
	return false
}

// NextOpen returns t if the agency is open at t, otherwise when it opens
// next; false when it never opens within a year.
func (h Hours) NextOpen(t time.Time) (time.Time, bool) {
	if h.Open(t) {
		return t, true
	}
	t = t.In(rome)
	y, m, d := t.Date()
	// Every holiday and closure comes round within a year.
	for i := range 367 {
		date := time.Date(y, m, d+i, 12, 0, 0, 0, rome)
		if h.closed(date) {
			continue
		}
		for _, s := range h.week[date.Weekday()] {
			// time.Date normalises a wall time skipped by summer time forward.
			open := time.Date(y, m, d+i, 0, s.from, 0, 0, rome)
			if open.After(t) {
				return open, true
			}
		}
	}
	return time.Time{}, false
}

// closed reports whether the day of t (in rome) is a holiday or a closure.
func (h Hours) closed(t time.Time) bool {
	if h.holidays && Holiday(t) {
		return true
	}
	y, m, d := t.Date()
	return slices.ContainsFunc(h.closures, func(c closure) bool {
		return (c.year == 0 || c.year == y) && c.month == m && c.day == d
	})
}

// fixedHolidays are the national holidays on a fixed date (L. 260/1949 art.
// 2 as amended), with the first year each applies.
var fixedHolidays = []struct {
	month      time.Month
	day, since int
}{
	{time.January, 1, 0},    // Capodanno
	{time.January, 6, 0},    // Epifania
	{time.April, 25, 0},     // Liberazione
	{time.May, 1, 0},        // Festa del Lavoro
	{time.June, 2, 0},       // Festa della Repubblica
	{time.August, 15, 0},    // Ferragosto
	{time.October, 4, 2026}, // San Francesco, restored by L. 151/2025
	{time.November, 1, 0},   // Ognissanti
	{time.December, 8, 0},   // Immacolata
	{time.December, 25, 0},  // Natale
	{time.December, 26, 0},  // Santo Stefano
}

// Holiday reports whether the day of t, in Rome, is an Italian national
// holiday: a fixed one, Easter Sunday or Easter Monday. Other Sundays are left
// to the weekly schedule.
func Holiday(t time.Time) bool {
	y, m, d := t.In(rome).Date()
	for _, f := range fixedHolidays {
		if f.month == m && f.day == d && y >= f.since {
			return true
		}
	}
	em, ed := easter(y)
	date, sunday := time.Date(y, m, d, 0, 0, 0, 0, time.UTC), time.Date(y, em, ed, 0, 0, 0, 0, time.UTC)
	return date.Equal(sunday) || date.Equal(sunday.AddDate(0, 0, 1))
}

// easter returns the date of Easter Sunday in the Gregorian calendar, by the
// anonymous algorithm (Meeus/Jones/Butcher).
func easter(y int) (time.Month, int) {
	a := y % 19
	b, c := y/100, y%100
	d, e := b/4, b%4
	f := (b + 8) / 25
	g := (b - f + 1) / 3
	h := (19*a + b - d - g + 15) % 30
	i, k := c/4, c%4
	l := (32 + 2*e + 2*i - h - k) % 7
	m := (a + 11*h + 22*l) / 451
	n := h + l - 7*m + 114
	return time.Month(n / 31), n%31 + 1
}

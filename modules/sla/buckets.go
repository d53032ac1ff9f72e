package sla

import (
	"fmt"
	"time"
	_ "time/tzdata" // Europe/Rome even on hosts without a zoneinfo database
)

// Rome is the time zone of every bucket: a day is a day of the Italian
// calendar, 23 or 25 hours long at the changes of daylight saving time.
var Rome = func() *time.Location {
	loc, err := time.LoadLocation("Europe/Rome")
	if err != nil {
		panic(err) // cannot happen: time/tzdata is embedded
	}
	return loc
}()

// Bucket is the length of the periods the figures are kept for.
type Bucket string

const (
	Hour  Bucket = "hour"
	Day   Bucket = "day"
	Week  Bucket = "week" // Monday to Sunday, as ISO 8601 weeks
	Month Bucket = "month"
)

// Buckets lists every bucket length, shortest first.
var Buckets = []Bucket{Hour, Day, Week, Month}

// ParseBucket reads a bucket length as the API names it.
func ParseBucket(s string) (Bucket, error) {
	for _, b := range Buckets {
		if string(b) == s {
			return b, nil
		}
	}
	return "", fmt.Errorf("bucket %q is not one of hour, day, week, month", s)
}

// Start returns the start of the bucket holding t, in Rome time.
func (b Bucket) Start(t time.Time) time.Time {
	t = t.In(Rome)
	y, m, d := t.Date()
	switch b {
	case Hour:
		// Rome's offsets are whole hours, so the hour starts where UTC's does.
		return t.Truncate(time.Hour)
	case Week:
		return time.Date(y, m, d-(int(t.Weekday())+6)%7, 0, 0, 0, 0, Rome)
	case Month:
		return time.Date(y, m, 1, 0, 0, 0, 0, Rome)
	default:
		return time.Date(y, m, d, 0, 0, 0, 0, Rome)
	}
}

// Next returns the start of the bucket after the one starting at start.
func (b Bucket) Next(start time.Time) time.Time {
	y, m, d := start.Date()
	switch b {
	case Hour:
		return start.Add(time.Hour)
	case Week:
		return time.Date(y, m, d+7, 0, 0, 0, 0, Rome)
	case Month:
		return time.Date(y, m+1, 1, 0, 0, 0, 0, Rome)
	default:
		return time.Date(y, m, d+1, 0, 0, 0, 0, Rome)
	}
}

// key names a bucket in the store. The offset makes the two 02:00 hours of
// the day daylight saving time ends two buckets.
func (b Bucket) key(start time.Time) string {
	return string(b) + ":" + start.Format(time.RFC3339)
}

package sip

import (
	"testing"
	"time"
)

// Every directory call of the registrar ends no later than dirTimeout after
// it began, and no more than dirTimeout/64 sooner, however long the switch
// has run: the shared contexts are renewed.
func TestSharedDeadlineBoundsEachCall(t *testing.T) {
	var d sharedDeadline
	start := time.Now()
	for _, after := range []time.Duration{0, time.Millisecond, dirTimeout / 64, dirTimeout / 2, dirTimeout, time.Hour} {
		now := start.Add(after)
		deadline, ok := d.context(now).Deadline()
		if !ok || deadline.After(now.Add(dirTimeout)) || deadline.Before(now.Add(dirTimeout-dirTimeout/64)) {
			t.Fatalf("a call %v in: deadline %v after it (set: %v), want within (%v, %v]",
				after, deadline.Sub(now), ok, dirTimeout-dirTimeout/64, dirTimeout)
		}
	}
	if later := start.Add(time.Hour); d.context(later.Add(time.Millisecond)) != d.context(later.Add(2*time.Millisecond)) {
		t.Errorf("calls a millisecond apart got contexts of their own")
	}
}

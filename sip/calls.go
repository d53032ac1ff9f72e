package sip

import "time"

// call is a confirmed dialog through the switch.
type call struct {
	start                    time.Time
	sourceAgency, destAgency string
}

func (s *Switch) startCall(id, src, dst string) {
	if _, loaded := s.calls.LoadOrStore(id, &call{start: time.Now(), sourceAgency: src, destAgency: dst}); !loaded {
		s.active.Add(1)
	}
}

// endCall forgets a call once its BYE has been answered.
func (s *Switch) endCall(id string, code int) {
	if code < 200 || code >= 300 && code != 481 && code != 408 {
		return
	}
	if _, ok := s.calls.LoadAndDelete(id); ok {
		s.active.Add(-1)
	}
}

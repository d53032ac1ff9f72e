package modules_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
)

func TestEvents(t *testing.T) {
	call := modules.Call{CallID: "c1", Caller: modules.Caller{Number: "+390811234567"}, Headers: map[string]string{"X-Ticket": "LA-1"}}
	callEvents := []modules.Event{
		modules.CallOffered{Call: call},
		modules.CallRinging{Call: call},
		modules.CallAnswered{Call: call},
		modules.CallTransferred{Call: call},
		modules.CallOverflowed{Call: call},
		modules.CallEnded{Call: call},
		modules.DigitsCollected{Call: call},
	}
	phoneEvents := []modules.Event{modules.Registered{}, modules.Unregistered{},
		modules.TicketChanged{}, modules.PECDelivery{}, modules.PECReceived{}, modules.RatingOffered{}, modules.RatingGiven{}}

	kinds := map[string]bool{}
	for _, ev := range append(callEvents, phoneEvents...) {
		if kinds[ev.Kind()] {
			t.Errorf("%T: kind %q used twice", ev, ev.Kind())
		}
		kinds[ev.Kind()] = true
	}
	for _, ev := range callEvents {
		ce, ok := ev.(modules.CallEvent)
		if !ok || ce.CallInfo().CallID != "c1" {
			t.Errorf("%T is not a CallEvent carrying its Call", ev)
		}
	}
}

func TestEventJSON(t *testing.T) {
	ev := modules.CallEnded{
		Call:        modules.Call{CallID: "c1", SourceAgency: "c_f839", Headers: map[string]string{"X-Ticket": "LA-1"}},
		Disposition: modules.DispositionAnswered,
		Talk:        90 * time.Second,
		Media:       &modules.MediaQuality{Caller: modules.LegQuality{Jitter: 0.004}},
	}
	b, err := json.Marshal(ev)
	must(t, err)
	for _, want := range []string{`"call_id":"c1"`, `"source_agency":"c_f839"`, `"headers":{"X-Ticket":"LA-1"}`,
		`"disposition":"answered"`, `"talk_ns":90000000000`, `"jitter_seconds":0.004`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
	var back modules.CallEnded
	must(t, json.Unmarshal(b, &back))
	if back.CallID != "c1" || back.Media.Caller.Jitter != 0.004 || back.Talk != ev.Talk {
		t.Errorf("round trip: %+v", back)
	}
}

package ticketing

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

const schemaFile = "../../docs/ticket.schema.json"

func ticketSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// fullTicket has every field set.
func fullTicket() *Ticket {
	tk := testTicket(ticketcode.New(2026, "CAM", 123), StatusChiuso, t0.Add(time.Hour))
	tk.UpdatedAt = tk.ClosedAt
	tk.Caller = Caller{Number: "+393331234567", DisplayName: "Mario Rossi", Trunk: "pstn-napoli"}
	tk.CitizenPEC = "mario.rossi@pec.it"
	tk.Agencies = []string{"r_campan", "inps"}
	tk.Hops = []Hop{{
		Agency: "r_campan", CallID: "c1", Via: ViaCall, ReachedAt: t0, Operator: "campania.deluca",
		AnsweredAt: t0.Add(5 * time.Second), WaitSeconds: 5, EndedAt: t0.Add(time.Minute), TalkSeconds: 55, Disposition: "answered",
	}, {
		Agency: "inps", CallID: "c2", Via: ViaTransfer, Reason: "blind", TransferredBy: "campania.deluca", ReachedAt: t0.Add(time.Minute),
	}}
	tk.Notes = []Note{{Time: t0.Add(time.Hour), Agency: "inps", User: "inps.ricci", Text: "pratica chiusa"}}
	tk.Channel = ChannelPhone
	ev := "/api/pec/evidence/5f2b9c0e"
	tk.PECMessages = []PECMessage{{
		MessageID:  "<la.1@pec.lineamica.gov.it>",
		Recipients: []PECRecipient{{Address: "mario.rossi@pec.it", State: modules.PECNotDelivered, Receipt: "errore-consegna", Time: t0, Error: "5.1.1 - casella inesistente", Evidence: ev}},
		Receipts:   []PECReceipt{{Receipt: "errore-consegna", Recipient: "mario.rossi@pec.it", State: modules.PECNotDelivered, Time: t0, Error: "5.1.1 - casella inesistente", Evidence: ev}},
	}}
	tk.PECReceived = []PECAttachment{{Time: t0, From: "mario.rossi@pec.it", Subject: "Re: pratica", MessageID: "<m1@pec.it>", Text: "grazie", Evidence: ev}}
	tk.Ratings = []Rating{{Time: t0, Agency: "inps", Rating: modules.RatingPositive, Reason: "service", Channel: "web"}}
	return tk
}

// first returns the first item of the list named key in a ticket decoded
// as a map.
func first(m map[string]any, key string) map[string]any {
	return m[key].([]any)[0].(map[string]any)
}

func validate(t *testing.T, sch *jsonschema.Schema, doc []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	return sch.Validate(v)
}

func TestTicketJSONMatchesSchema(t *testing.T) {
	sch := ticketSchema(t)
	full, err := json.Marshal(fullTicket())
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(t, sch, full); err != nil {
		t.Errorf("a full ticket: %v", err)
	}

	// What the API serves, as it serves it.
	n := startNode(t, kv.NewMemory(), testOptions)
	n.publish(transferFlow("c1", citizen("+393331234567"), "r_campan", "inps", 0)...)
	code := n.waitTicket("", ended).Code
	for _, req := range []string{"/tickets/" + code, "/tickets"} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/api/ticketing"+req, nil)
		r.Header.Set(AgencyHeader, "inps")
		n.mux.ServeHTTP(rec, r)
		doc := rec.Body.Bytes()
		if req == "/tickets" {
			var l struct{ Tickets []json.RawMessage }
			json.Unmarshal(doc, &l)
			doc = l.Tickets[0]
		}
		if err := validate(t, sch, doc); err != nil {
			t.Errorf("GET %s: %v\n%s", req, err, doc)
		}
	}
}

// The schema has teeth: documents that break it are refused.
func TestSchemaRefusesBrokenTickets(t *testing.T) {
	sch := ticketSchema(t)
	for name, breakIt := range map[string]func(map[string]any){
		"no code":           func(m map[string]any) { delete(m, "code") },
		"bad code":          func(m map[string]any) { m["code"] = "LA-2026-Campania-1" },
		"unknown status":    func(m map[string]any) { m["status"] = "dimenticato" },
		"version 2":         func(m map[string]any) { m["schema_version"] = 2 },
		"time not ISO":      func(m map[string]any) { m["created_at"] = "02/03/2026" },
		"no hops":           func(m map[string]any) { m["hops"] = []any{} },
		"hop without via":   func(m map[string]any) { delete(m["hops"].([]any)[0].(map[string]any), "via") },
		"negative talk":     func(m map[string]any) { m["hops"].([]any)[0].(map[string]any)["talk_seconds"] = -1 },
		"pec not an email":  func(m map[string]any) { m["citizen_pec"] = "mario" },
		"note without text": func(m map[string]any) { delete(m["notes"].([]any)[0].(map[string]any), "text") },
		"unknown channel":   func(m map[string]any) { m["channel"] = "fax" },
		"unknown pec state": func(m map[string]any) {
			first(m, "pec_messages")["recipients"].([]any)[0].(map[string]any)["state"] = "lost"
		},
		"receipt no evidence": func(m map[string]any) {
			delete(first(m, "pec_messages")["receipts"].([]any)[0].(map[string]any), "evidence")
		},
		"received from not an email": func(m map[string]any) { first(m, "pec_received")["from"] = "mario" },
		"rating 4":                   func(m map[string]any) { first(m, "ratings")["rating"] = 4 },
	} {
		b, _ := json.Marshal(fullTicket())
		var m map[string]any
		json.Unmarshal(b, &m)
		breakIt(m)
		b, _ = json.Marshal(m)
		if err := validate(t, sch, b); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
}

// Every field the module writes is described in the schema.
func TestSchemaDescribesEveryField(t *testing.T) {
	raw, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties map[string]struct {
			Properties map[string]any
		}
		Defs map[string]struct{ Properties map[string]any } `json:"$defs"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(fullTicket())
	var doc map[string]any
	json.Unmarshal(b, &doc)
	for k := range doc {
		if _, ok := schema.Properties[k]; !ok {
			t.Errorf("ticket field %q not in the schema", k)
		}
	}
	for object, list := range map[string]string{"hop": "hops", "note": "notes", "pec_message": "pec_messages", "pec_attachment": "pec_received", "rating": "ratings"} {
		for _, item := range doc[list].([]any) {
			for k := range item.(map[string]any) {
				if _, ok := schema.Defs[object].Properties[k]; !ok {
					t.Errorf("%s field %q not in the schema", object, k)
				}
			}
		}
	}
	for k := range doc["caller"].(map[string]any) {
		if _, ok := schema.Properties["caller"].Properties[k]; !ok {
			t.Errorf("caller field %q not in the schema", k)
		}
	}
}

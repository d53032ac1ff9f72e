package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
	"github.com/lineamica/centralino/routing/directory"
	"github.com/lineamica/centralino/test/sipua"
)

// surveyNumber is the IVR's number: user lineamica.survey, extension 999 of
// Linea Amica (prefix 8000).
const surveyNumber = "8000999"

// surveyNode runs the demo network with ticketing and the survey, whose IVR
// registers as lineamica.survey; citizens call from a trusted trunk.
func surveyNode(t *testing.T, options map[string]any) *node {
	t.Helper()
	return startNode(t, nodeOptions{trusted: []string{"127.0.0.1/32"}, edit: func(c *configs.Config) {
		c.Network.Users = append(c.Network.Users, configs.User{User: directory.User{Username: "lineamica.survey", DisplayName: "Valutazione del servizio",
			Agency: "lineamica", Role: directory.RolePhone, Extension: "999"}, Password: "survey-secret"})
		opts := map[string]any{"switch": c.Listen[0].Addr, "user": "lineamica.survey", "password": "survey-secret", "digit_timeout": "1s"}
		for k, v := range options {
			opts[k] = v
		}
		c.Modules = []modules.Config{
			{Name: "ticketing", Options: map[string]any{"regions": map[string]any{"r_campan": "CAM"}}},
			{Name: "survey", Options: opts},
		}
	}})
}

// waitSurveyRegistered waits for the IVR's registration.
func waitSurveyRegistered(t *testing.T, n *node) {
	t.Helper()
	waitFor(t, 10*time.Second, "the survey IVR's registration", func() bool {
		_, body := n.get("/api/registrations")
		return strings.Contains(body, "lineamica.survey")
	})
}

// citizenCall: a citizen calls URP Campania's public number, the operator
// answers. It returns both phones and the citizen's dialog.
func citizenCall(t *testing.T, n *node) (citizen, operator *sipua.Phone, inv *sip.Request, res *sip.Response) {
	t.Helper()
	operator = phone(t, n, "campania.deluca", "udp")
	mustRegister(t, operator)
	citizen = phone(t, n, "3331234567", "udp")
	res, inv = citizen.Invite("8100000")
	if res.StatusCode != 200 {
		t.Fatalf("citizen's call to the URP: %d %s", res.StatusCode, res.Reason)
	}
	citizen.Ack(inv, res)
	<-operator.Invites
	return citizen, operator, inv, res
}

// transferToSurvey: the operator transfers the citizen to the survey; the
// citizen's phone follows and ACKs the IVR's answer.
func transferToSurvey(t *testing.T, citizen, operator *sipua.Phone, inv *sip.Request) sipua.Call {
	t.Helper()
	if refer := operator.ReferAnswered(inv.CallID().Value(), surveyNumber); refer.StatusCode != 202 {
		t.Fatalf("REFER to the survey: %d %s", refer.StatusCode, refer.Reason)
	}
	select {
	case c := <-citizen.TransferCalls:
		if c.Answer.StatusCode != 200 {
			t.Fatalf("the call to the survey: %d %s", c.Answer.StatusCode, c.Answer.Reason)
		}
		citizen.Ack(c.Invite, c.Answer)
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the citizen's phone did not reach the survey")
	}
	return sipua.Call{}
}

type surveyResults struct {
	Agencies []struct {
		Agency  string           `json:"agency"`
		Offered int64            `json:"offered"`
		NoVote  int64            `json:"no_vote"`
		Ratings map[string]int64 `json:"ratings"`
		Reasons map[string]int64 `json:"reasons"`
		Channel map[string]int64 `json:"channel"`
	} `json:"agencies"`
}

func surveyRatings(t *testing.T, n *node, agency string) (offered, noVote int64, ratings, reasons, channel map[string]int64) {
	t.Helper()
	code, body := n.get("/api/survey/ratings?agency=" + agency)
	if code != 200 {
		t.Fatalf("GET /api/survey/ratings: %d %s", code, body)
	}
	var r surveyResults
	if err := json.Unmarshal([]byte(body), &r); err != nil || len(r.Agencies) != 1 {
		t.Fatalf("ratings %s: %v", body, err)
	}
	a := r.Agencies[0]
	return a.Offered, a.NoVote, a.Ratings, a.Reasons, a.Channel
}

// waitBye waits for the IVR to hang up on the citizen.
func waitBye(t *testing.T, p *sipua.Phone, within time.Duration) {
	t.Helper()
	select {
	case <-p.Byes:
	case <-time.After(within):
		t.Fatal("the survey did not hang up")
	}
}

// The operator transfers the citizen to the survey; the citizen hears the
// prompt, votes 1 with SIP INFO, is thanked and hung up on. The vote counts
// for the agency (never the operator) and carries the ticket, which then
// cannot be rated again on the web.
func TestSurveyByTransferVoteByINFO(t *testing.T) {
	n := surveyNode(t, nil)
	waitSurveyRegistered(t, n)
	citizen, operator, inv, _ := citizenCall(t, n)
	c := transferToSurvey(t, citizen, operator, inv)
	question, err := os.ReadFile("../../modules/survey/prompts/question.ulaw")
	if err != nil {
		t.Fatal(err)
	}
	if heard, _ := sipua.ReceiveRTP(t, citizen.RTP); !bytes.Equal(heard, question[:160]) {
		t.Fatalf("the citizen hears %x..., not the question's first 20 ms", heard[:min(len(heard), 16)])
	}
	if r := citizen.InfoDTMF(c.Invite, c.Answer, c.Invite.CSeq().SeqNo+1, '1'); r.StatusCode != 200 {
		t.Fatalf("INFO: %d %s", r.StatusCode, r.Reason)
	}
	waitBye(t, citizen, 20*time.Second)

	offered, noVote, ratings, _, channel := surveyRatings(t, n, "r_campan")
	if offered != 1 || noVote != 0 || ratings["positive"] != 1 || channel["phone"] != 1 {
		t.Errorf("r_campan: offered %d, no vote %d, ratings %v, channels %v; want one positive phone vote", offered, noVote, ratings, channel)
	}
	if v := n.metric(t, `centralino_survey_ratings_total{agency="r_campan",channel="phone",module="survey",rating="positive"}`); v != 1 {
		t.Errorf("positive votes counted in /metrics: %v", v)
	}
	_, metrics := n.get("/metrics")
	if strings.Contains(metrics, "campania.deluca") {
		t.Error("/metrics names the operator")
	}
	tk := ticketOf(t, n, "r_campan")
	if code, body := n.get("/api/survey/rate/" + tk); code != http.StatusConflict || !strings.Contains(body, "già stata valutata") {
		t.Errorf("web page of a ticket rated by phone: %d\n%s", code, body)
	}
}

// A negative vote by RFC 4733 events, then the reason (waiting time).
func TestSurveyNegativeVoteWithReasonByRTPEvents(t *testing.T) {
	n := surveyNode(t, nil)
	waitSurveyRegistered(t, n)
	citizen, operator, inv, _ := citizenCall(t, n)
	c := transferToSurvey(t, citizen, operator, inv)
	ivr, err := sipua.SDPAddr(c.Answer.Body())
	if err != nil {
		t.Fatal(err)
	}
	sipua.ReceiveRTP(t, citizen.RTP)
	sipua.SendDTMF(t, citizen.RTP, ivr, 101, '3')
	time.Sleep(500 * time.Millisecond) // the reason's prompt starts
	sipua.SendDTMF(t, citizen.RTP, ivr, 101, '1')
	waitBye(t, citizen, 20*time.Second)
	_, _, ratings, reasons, _ := surveyRatings(t, n, "r_campan")
	if ratings["negative"] != 1 || reasons["waiting"] != 1 {
		t.Errorf("ratings %v, reasons %v; want one negative vote for the waiting time", ratings, reasons)
	}
}

// A wrong key repeats the question; silence after it ends the survey: the
// survey was offered, no vote given.
func TestSurveyWrongKeyThenSilence(t *testing.T) {
	n := surveyNode(t, nil)
	waitSurveyRegistered(t, n)
	citizen, operator, inv, _ := citizenCall(t, n)
	c := transferToSurvey(t, citizen, operator, inv)
	sipua.ReceiveRTP(t, citizen.RTP)
	if r := citizen.InfoDTMF(c.Invite, c.Answer, c.Invite.CSeq().SeqNo+1, '7'); r.StatusCode != 200 {
		t.Fatalf("INFO: %d", r.StatusCode)
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case <-citizen.Byes:
		t.Fatal("the survey hung up after one wrong key")
	default:
	}
	sipua.ReceiveRTP(t, citizen.RTP) // the question again
	waitBye(t, citizen, 40*time.Second)
	offered, noVote, ratings, _, _ := surveyRatings(t, n, "r_campan")
	if offered != 1 || noVote != 1 || ratings["positive"]+ratings["sufficient"]+ratings["negative"] != 0 {
		t.Errorf("offered %d, no vote %d, ratings %v; want one survey without a vote", offered, noVote, ratings)
	}
	if v := n.metric(t, `centralino_survey_no_vote_total{agency="r_campan",module="survey"}`); v != 1 {
		t.Errorf("no-vote counted in /metrics: %v", v)
	}
}

// The survey number dialled without a call to rate is refused.
func TestSurveyDialledDirectlyIsRefused(t *testing.T) {
	n := surveyNode(t, nil)
	waitSurveyRegistered(t, n)
	citizen := phone(t, n, "3331234567", "udp")
	if res, _ := citizen.Invite(surveyNumber); res.StatusCode != 403 {
		t.Fatalf("the survey dialled directly: %d %s, want 403", res.StatusCode, res.Reason)
	}
}

// The web rating: the page of a ticket, one vote, a second refused; a bad
// or unknown code gets a clear page. /rate/{code} leads to the page.
func TestSurveyWebRatingOncePerTicket(t *testing.T) {
	n := surveyNode(t, nil)
	citizen, _, inv, res := citizenCall(t, n)
	citizen.Bye(inv, res)
	tk := ticketOf(t, n, "r_campan")
	page := "http://" + n.HTTPAddr + "/api/survey/rate/" + tk
	var body string
	waitFor(t, 5*time.Second, "the ticket known to the survey", func() bool {
		var code int
		code, body = n.get("/rate/" + tk) // the alias of the PEC receipt's link
		return code == 200
	})
	for _, want := range []string{`lang="it"`, "Soddisfatto", "Abbastanza soddisfatto", "Non soddisfatto", tk} {
		if !strings.Contains(body, want) {
			t.Errorf("the rating page lacks %q", want)
		}
	}
	post := func() (int, string) {
		r, err := http.PostForm(page, url.Values{"rating": {"2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if code, b := post(); code != 200 || !strings.Contains(b, "Grazie") {
		t.Fatalf("first vote: %d\n%s", code, b)
	}
	if code, b := post(); code != http.StatusConflict || !strings.Contains(b, "già stata valutata") {
		t.Fatalf("second vote: %d\n%s", code, b)
	}
	for path, want := range map[string]int{
		"/api/survey/rate/not-a-code":                                        http.StatusBadRequest,
		"/api/survey/rate/" + ticketcode.New(2026, "CAM", 999999):            http.StatusNotFound,
		"/api/survey/rate/" + strings.Replace(tk, "-000001-", "-000007-", 1): http.StatusBadRequest, // mistyped
	} {
		if code, b := n.get(path); code != want {
			t.Errorf("%s: %d, want %d\n%s", path, code, want, b)
		}
	}
	_, _, ratings, _, channel := surveyRatings(t, n, "r_campan")
	if ratings["sufficient"] != 1 || channel["web"] != 1 {
		t.Errorf("ratings %v, channels %v; want one web vote 'sufficient'", ratings, channel)
	}
}

// ticketOf returns the code of the one ticket of an agency.
func ticketOf(t *testing.T, n *node, agency string) string {
	t.Helper()
	var list struct {
		Tickets []struct {
			Code string `json:"code"`
		} `json:"tickets"`
	}
	waitFor(t, 5*time.Second, "the agency's ticket", func() bool {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/api/ticketing/tickets?agency=%s", n.HTTPAddr, agency), nil)
		req.Header.Set("X-Agency", agency)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		list.Tickets = nil
		json.NewDecoder(resp.Body).Decode(&list)
		return len(list.Tickets) == 1
	})
	return list.Tickets[0].Code
}

// URP Campania's callers are taken to the survey when the operator hangs up
// first: the operator hangs up, the citizen stays in the same call and hears
// the survey, votes 3 (SIP INFO in its original dialog) and gives the
// reason 1 (RFC 4733 through the relay); the survey hangs up on the citizen.
func TestSurveyAfterTheOperatorHangsUp(t *testing.T) {
	n := surveyNode(t, map[string]any{"after_hangup": []any{"r_campan"}, "number": surveyNumber})
	waitSurveyRegistered(t, n)
	citizen, operator, inv, res := citizenCall(t, n)
	if r := operator.HangUpAnswered(inv.CallID().Value()); r.StatusCode != 200 {
		t.Fatalf("the operator's BYE: %d %s", r.StatusCode, r.Reason)
	}
	select {
	case <-citizen.Byes:
		t.Fatal("the citizen was hung up on instead of taken to the survey")
	default:
	}
	relay, err := sipua.SDPAddr(res.Body())
	if err != nil {
		t.Fatal(err)
	}
	sipua.ReceiveRTP(t, citizen.RTP) // the question
	waitFor(t, 5*time.Second, "the survey offered", func() bool {
		offered, _, _, _, _ := surveyRatings(t, n, "r_campan")
		return offered == 1
	})
	if r := citizen.InfoDTMF(inv, res, inv.CSeq().SeqNo+1, '3'); r.StatusCode != 200 {
		t.Fatalf("INFO in the citizen's dialog: %d %s", r.StatusCode, r.Reason)
	}
	time.Sleep(500 * time.Millisecond) // the reason's prompt starts
	sipua.SendDTMF(t, citizen.RTP, relay, 101, '1')
	waitBye(t, citizen, 20*time.Second)
	offered, noVote, ratings, reasons, _ := surveyRatings(t, n, "r_campan")
	if offered != 1 || noVote != 0 || ratings["negative"] != 1 || reasons["waiting"] != 1 {
		t.Errorf("offered %d, no vote %d, ratings %v, reasons %v; want one negative vote for the waiting time", offered, noVote, ratings, reasons)
	}
	waitFor(t, 5*time.Second, "the calls over", func() bool {
		return n.metric(t, "centralino_active_calls") == 0
	})
	// The ticket keeps the vote, without the operator.
	var tk struct {
		Ratings []map[string]any `json:"ratings"`
	}
	waitFor(t, 5*time.Second, "the vote on the ticket", func() bool {
		req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr+"/api/ticketing/tickets/"+ticketOf(t, n, "r_campan"), nil)
		req.Header.Set("X-Agency", "r_campan")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&tk)
		return len(tk.Ratings) == 1
	})
	r := tk.Ratings[0]
	if r["rating"] != float64(3) || r["reason"] != "waiting" || r["agency"] != "r_campan" || r["channel"] != "phone" {
		t.Errorf("the ticket's vote: %v", r)
	}
	for k, v := range r {
		if fmt.Sprint(v) == "campania.deluca" {
			t.Errorf("the ticket's vote names the operator in %q", k)
		}
	}
}

// A citizen taken to the survey who hangs up without voting: the survey
// ends (offered, no vote) and nothing is left of the call.
func TestSurveyAfterHangupCallerLeaves(t *testing.T) {
	n := surveyNode(t, map[string]any{"after_hangup": []any{"*"}, "number": surveyNumber})
	waitSurveyRegistered(t, n)
	citizen, operator, inv, res := citizenCall(t, n)
	if r := operator.HangUpAnswered(inv.CallID().Value()); r.StatusCode != 200 {
		t.Fatalf("the operator's BYE: %d", r.StatusCode)
	}
	sipua.ReceiveRTP(t, citizen.RTP) // the question
	if r := citizen.Bye(inv, res); r.StatusCode != 200 {
		t.Fatalf("the citizen's BYE during the survey: %d %s", r.StatusCode, r.Reason)
	}
	waitFor(t, 5*time.Second, "the survey counted without a vote", func() bool {
		offered, noVote, _, _, _ := surveyRatings(t, n, "r_campan")
		return offered == 1 && noVote == 1
	})
	waitFor(t, 5*time.Second, "the calls over", func() bool { return n.metric(t, "centralino_active_calls") == 0 })
}

// When the survey cannot be reached (its IVR is not registered), the
// citizen gets the BYE the operator sent.
func TestSurveyAfterHangupUnreachable(t *testing.T) {
	n := surveyNode(t, map[string]any{"after_hangup": []any{"r_campan"}, "number": surveyNumber, "switch": "127.0.0.1:9"})
	citizen, operator, inv, _ := citizenCall(t, n)
	if r := operator.HangUpAnswered(inv.CallID().Value()); r.StatusCode != 200 {
		t.Fatalf("the operator's BYE: %d", r.StatusCode)
	}
	waitBye(t, citizen, 5*time.Second)
	waitFor(t, 5*time.Second, "the calls over", func() bool { return n.metric(t, "centralino_active_calls") == 0 })
}

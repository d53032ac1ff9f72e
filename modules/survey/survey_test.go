package survey

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
)

// start runs the module on a bus of its own; its IVR registers with a
// switch that is not there (the web and the counts do not need one).
func start(t *testing.T, options map[string]any) (*modules.Bus, *httptest.Server, func() []modules.RatingGiven) {
	t.Helper()
	bus := modules.NewBus(modules.BusOptions{})
	mux := http.NewServeMux()
	opts := map[string]any{"switch": "127.0.0.1:9", "user": "lineamica.survey", "password": "x"}
	for k, v := range options {
		opts[k] = v
	}
	var mu sync.Mutex
	var given []modules.RatingGiven
	if err := bus.Subscribe("probe", 0, []string{modules.KindRatingGiven}, func(_ context.Context, ev modules.Event) {
		mu.Lock()
		given = append(given, ev.(modules.RatingGiven))
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	running, err := modules.Start(context.Background(), []modules.Config{{Name: "survey", Options: opts}},
		modules.Deps{Bus: bus, Mux: mux, Store: kv.NewMemory(), Metrics: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		bus.Close(ctx)
		running.Stop(ctx)
	})
	return bus, srv, func() []modules.RatingGiven {
		mu.Lock()
		defer mu.Unlock()
		return append([]modules.RatingGiven(nil), given...)
	}
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	r, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

func TestWebRatingOncePerTicket(t *testing.T) {
	bus, srv, given := start(t, nil)
	code := ticketcode.New(2026, "CAM", 123)
	bus.Publish(modules.TicketChanged{Code: code, Agency: "r_campan", Status: "open", Opened: true})
	page := srv.URL + "/api/survey/rate/" + code
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, body := get(t, srv.URL+"/api/survey/rate/"+strings.ToLower(strings.ReplaceAll(code, "-", ""))) // as typed from a letter
		if status == 200 {
			if !strings.Contains(body, code) || !strings.Contains(body, "Non soddisfatto") {
				t.Fatalf("page:\n%s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ticket's page: %d\n%s", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	post := func(v url.Values) (int, string) {
		r, err := http.PostForm(page, v)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if status, body := post(url.Values{"rating": {"4"}}); status != 400 || !strings.Contains(body, "Scegli una delle tre") {
		t.Errorf("rating 4: %d\n%s", status, body)
	}
	if status, _ := post(url.Values{"rating": {"3"}, "reason": {"waiting"}}); status != 200 {
		t.Fatalf("vote: %d", status)
	}
	if status, body := post(url.Values{"rating": {"1"}}); status != http.StatusConflict || !strings.Contains(body, "già stata valutata") {
		t.Errorf("second vote: %d\n%s", status, body)
	}
	if status, _ := get(t, page); status != http.StatusConflict {
		t.Errorf("page after the vote: %d", status)
	}
	unknown := ticketcode.New(2026, "CAM", 999)
	mistyped := strings.Replace(unknown, "000999", "000998", 1) // the check character catches it
	for u, want := range map[string]struct {
		status int
		text   string
	}{
		"LA-26-X": {400, "non è scritto correttamente"},
		mistyped:  {400, "errore di battitura"},
		unknown:   {404, "Pratica non trovata"},
	} {
		if status, body := get(t, srv.URL+"/api/survey/rate/"+u); status != want.status || !strings.Contains(body, want.text) {
			t.Errorf("%s: %d, want %d %q\n%s", u, status, want.status, want.text, body)
		}
	}
	deadline = time.Now().Add(5 * time.Second)
	for len(given()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	g := given()
	if len(g) != 1 || g[0].Agency != "r_campan" || g[0].TicketCode != code || g[0].Rating != modules.RatingNegative ||
		g[0].Reason != "waiting" || g[0].Channel != "web" {
		t.Fatalf("ratings published: %+v", g)
	}
	_, body := get(t, srv.URL+"/api/survey/ratings")
	if !strings.Contains(body, `"agency":"r_campan"`) || !strings.Contains(body, `"negative":1`) || !strings.Contains(body, `"web":1`) {
		t.Errorf("ratings: %s", body)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		opts map[string]any
		want string
	}{
		{map[string]any{"user": ""}, `"user"`},
		{map[string]any{"after_hangup": []any{"r_campan"}}, `"number"`},
		{map[string]any{"digit_timeout": "soon"}, `digit_timeout`},
		{map[string]any{"digit_timeout": "2h"}, `digit_timeout`},
		{map[string]any{"switch": "nowhere"}, `"switch"`},
		{map[string]any{"listen": "0.0.0.0:5090"}, `"listen"`},
		{map[string]any{"colour": "blue"}, `unknown option`},
	} {
		opts := map[string]any{"switch": "127.0.0.1:9", "user": "u", "password": "p"}
		for k, v := range tc.opts {
			opts[k] = v
		}
		_, err := modules.Start(context.Background(), []modules.Config{{Name: "survey", Options: opts}},
			modules.Deps{Bus: modules.NewBus(modules.BusOptions{}), Mux: http.NewServeMux(), Store: kv.NewMemory()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.opts, err, tc.want)
		}
	}
}

func TestParseOffer(t *testing.T) {
	o, err := parseOffer([]byte("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n" +
		"m=audio 4000 RTP/AVP 9 8 0 96\r\na=rtpmap:9 G722/8000\r\na=rtpmap:96 telephone-event/8000\r\n"))
	if err != nil || o.remote.String() != "10.0.0.1:4000" || o.codec != 8 || o.law != 8 || !o.hasEvent || o.event != 96 {
		t.Errorf("offer %+v, %v", o, err)
	}
	for _, bad := range []string{
		"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 9\r\n",  // no G.711
		"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/SAVP 0\r\n", // SRTP
		"v=0\r\nm=audio 4000 RTP/AVP 0\r\n",                       // no address
		"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 99999 RTP/AVP 0\r\n", // bad port
		"\x00garbage",
	} {
		if _, err := parseOffer([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestInfoDigit(t *testing.T) {
	for _, tc := range []struct {
		ct, body string
		want     rune
		ok       bool
	}{
		{"application/dtmf-relay", "Signal=3\r\nDuration=160\r\n", '3', true},
		{"application/dtmf-relay", "signal= #\r\n", '#', true},
		{"application/dtmf", "1", '1', true},
		{"application/dtmf-relay", "Signal=12\r\n", 0, false},
		{"text/plain", "1", 0, false},
	} {
		req := sip.NewRequest(sip.INFO, sip.Uri{Host: "x"})
		req.AppendHeader(sip.NewHeader("Content-Type", tc.ct))
		req.SetBody([]byte(tc.body))
		d, ok := infoDigit(req)
		if d != tc.want || ok != tc.ok {
			t.Errorf("%s %q: %q %v", tc.ct, tc.body, d, ok)
		}
	}
}

func TestG711(t *testing.T) {
	// Both zeros of µ-law are A-law zero; full scale stays full scale.
	for u, a := range map[byte]byte{0xff: 0xd5, 0x7f: 0xd5, 0x80: 0xaa, 0x00: 0x2a} {
		if got := linearToAlaw(ulawToLinear(u)); got != a {
			t.Errorf("µ-law %#x: A-law %#x, want %#x", u, got, a)
		}
	}
}

// The answer keeps the offer's m-lines, the ones other than audio refused.
func TestAnswerMirrorsTheOffer(t *testing.T) {
	o, err := parseOffer([]byte("v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 5000 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 0 101\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\nm=audio 4002 RTP/AVP 8\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := &session{v: &ivr{host: "127.0.0.1"}, offer: o, conn: conn}
	var mlines []string
	for _, l := range strings.Split(string(s.answerSDP()), "\r\n") {
		if strings.HasPrefix(l, "m=") {
			mlines = append(mlines, l)
		}
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	want := []string{"m=video 0 RTP/AVP 96", fmt.Sprintf("m=audio %d RTP/AVP 0 101", port), "m=audio 0 RTP/AVP 8"}
	if !slices.Equal(mlines, want) {
		t.Errorf("answer m-lines %q, want %q", mlines, want)
	}
}

// An SDP offer from the network never panics the IVR, and an accepted one
// gets an answer with one audio stream.
func FuzzParseOffer(f *testing.F) {
	f.Add([]byte("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"))
	f.Add([]byte("v=0\r\nc=IN IP6 ::1\r\nm=video 1 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 8\r\nc=IN IP4 \r\n"))
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer conn.Close()
	f.Fuzz(func(t *testing.T, body []byte) {
		o, err := parseOffer(body)
		if err != nil {
			return
		}
		s := &session{v: &ivr{host: "127.0.0.1"}, offer: o, conn: conn}
		if n := strings.Count(string(s.answerSDP()), "\r\nm=audio "); n < 1 {
			t.Errorf("answer without its audio stream for %q", body)
		}
	})
}

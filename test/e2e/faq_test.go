package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lineamica/centralino/test/redisserver"
)

// faqReady waits for the demo network's starter FAQ to be indexed.
func faqReady(t *testing.T, n *node) {
	t.Helper()
	waitFor(t, 10*time.Second, "the starter FAQ", func() bool {
		return n.metric(t, `centralino_faq_entries{module="faq"}`) >= 50
	})
}

// A citizen opens the FAQ page served by the switch in Chromium, types a
// question and sees ranked answers; a sector narrows them. An operator's
// screen shows the suggestions when the operator answers a call.
func TestFAQPageInChromium(t *testing.T) {
	browser := need(t, "chromium")
	// The demo config enables the FAQ with its starter entries.
	n := startNode(t, nodeOptions{trusted: []string{"127.0.0.1/32"}})
	faqReady(t, n)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.WindowSize(1000, 1200))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("chromium, %s: %v\ncentralino log:\n%s", what, err, n.logs.String())
		}
	}

	do("opening the page",
		chromedp.Navigate("http://"+n.HTTPAddr+"/api/faq/"),
		chromedp.WaitVisible(chromedp.ID("q")),
		// The sectors come from the switch.
		chromedp.WaitReady(chromedp.CSS(`#settore option[value="pensioni"]`)))
	lang := run(t, ctx, chromedp.AttributeValue(chromedp.CSS("html"), "lang"))
	label := run(t, ctx, chromedp.Text(chromedp.CSS(`label[for="q"]`)))
	if lang.Value != "it" || label != "Che cosa vuoi sapere?" {
		t.Errorf("page: lang %q, label %q", lang.Value, label)
	}

	do("searching",
		chromedp.SendKeys(chromedp.ID("q"), "pensioni di vecchiaia"),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#elenco li.risultato h3")))
	status := run(t, ctx, chromedp.Text(chromedp.ID("stato")))
	results := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#elenco li.risultato h3")].map(h => h.textContent)`))
	if len(results) < 2 || !strings.Contains(results[0], "pensione di vecchiaia") || !strings.Contains(status, "trovat") {
		t.Fatalf("results %q (status %q)", results, status)
	}
	if dir := os.Getenv("FAQ_SCREENSHOTS"); dir != "" {
		os.WriteFile(filepath.Join(dir, "faq-search.png"), run(t, ctx, chromedp.FullScreenshot(100)), 0o644)
	}

	// Accents and plurals need not be typed; the sector filter narrows.
	do("searching a sector",
		chromedp.Clear(chromedp.ID("q")),
		chromedp.SendKeys(chromedp.ID("q"), "tessere sanitarie scadute"),
		chromedp.SetValue(chromedp.ID("settore"), "sanità"),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
	run(t, ctx, chromedp.Poll[bool](`(document.querySelector("#elenco h3") || {textContent: ""}).textContent.includes("tessera sanitaria")`))
	sectors := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#elenco .info")].map(p => p.textContent.split(" · ")[0])`))
	if len(sectors) == 0 {
		t.Fatal("no results in the sector")
	}
	for _, s := range sectors {
		if s != "Sanità" {
			t.Errorf("sector filter let %q through", s)
		}
	}

	do("opening the operator's screen",
		chromedp.Navigate("http://"+n.HTTPAddr+"/api/faq/ui/?operatore=inps.ricci"),
		chromedp.WaitVisible(chromedp.ID("suggerimenti")),
		chromedp.WaitReady(chromedp.CSS(`#suggerimenti[data-pronto="1"]`)))
	operator := phone(t, n, "inps.ricci", "udp")
	mustRegister(t, operator)
	citizen := phone(t, n, "3331234567", "udp")
	res, inv := citizen.Invite("8300000")
	if res.StatusCode != 200 {
		t.Fatalf("citizen's call to INPS: %d %s", res.StatusCode, res.Reason)
	}
	citizen.Ack(inv, res)
	defer citizen.Bye(inv, res)
	do("waiting for suggestions", chromedp.WaitVisible(chromedp.CSS("#elenco-suggerimenti li.risultato")))
	suggested := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#elenco-suggerimenti .info")].map(p => p.textContent)`))
	said := run(t, ctx, chromedp.Text(chromedp.ID("stato-suggerimenti")))
	if !strings.Contains(said, "INPS") || len(suggested) == 0 {
		t.Fatalf("operator's screen: %q, %q", said, suggested)
	}
	for _, s := range suggested {
		if !strings.HasPrefix(s, "Pensioni · ") {
			t.Errorf("suggested to INPS's operator: %q", s)
		}
	}
	if dir := os.Getenv("FAQ_SCREENSHOTS"); dir != "" {
		os.WriteFile(filepath.Join(dir, "faq-operator.png"), run(t, ctx, chromedp.FullScreenshot(100)), 0o644)
	}
}

// run runs a browser action and returns its value.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return v
}

// When INPS's operator answers a citizen's call, the operator's screen,
// listening on the suggestion stream, receives the pensions entries.
func TestFAQSuggestionsOnAnswer(t *testing.T) {
	n := startNode(t, nodeOptions{trusted: []string{"127.0.0.1/32"}})
	faqReady(t, n)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.HTTPAddr+"/api/faq/suggestions/stream?user=inps.ricci", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	next := func() (string, string) {
		var name, data string
		for events.Scan() {
			line := events.Text()
			switch {
			case line == "" && name != "":
				return name, data
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			}
		}
		t.Fatalf("stream ended: %v", events.Err())
		return "", ""
	}
	if ev, _ := next(); ev != "ready" {
		t.Fatalf("first event %q", ev)
	}

	operator := phone(t, n, "inps.ricci", "udp")
	mustRegister(t, operator)
	citizen := phone(t, n, "3331234567", "udp")
	res, inv := citizen.Invite("8300000")
	if res.StatusCode != 200 {
		t.Fatalf("citizen's call to INPS: %d %s", res.StatusCode, res.Reason)
	}
	citizen.Ack(inv, res)
	defer citizen.Bye(inv, res)

	ev, data := next()
	var sg struct {
		CallID  string `json:"call_id"`
		Agency  string `json:"agency"`
		Sector  string `json:"sector"`
		Entries []struct {
			ID       string `json:"id"`
			Question string `json:"question"`
			Sector   string `json:"sector"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(data), &sg); err != nil || ev != "suggestions" {
		t.Fatalf("%s %s (%v)", ev, data, err)
	}
	if sg.Agency != "inps" || sg.Sector != "pensioni" || len(sg.Entries) == 0 {
		t.Fatalf("suggestions %+v", sg)
	}
	for _, e := range sg.Entries {
		if e.Sector != "pensioni" {
			t.Errorf("suggested %s (%s) to INPS's operator", e.ID, e.Sector)
		}
	}
	// The call's Call-ID answers too, for a screen that asks.
	code, body := n.get("/api/faq/suggestions?call=" + sg.CallID)
	if code != 200 || !strings.Contains(body, sg.Entries[0].ID) {
		t.Fatalf("GET suggestions: %d %s", code, body)
	}
}

// An editor checks a FAQ file offline, then imports it into a running
// switch with the command line; errors name the lines.
func TestFAQCommandLine(t *testing.T) {
	n := startNode(t, nodeOptions{})
	faqReady(t, n)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cli := func(args ...string) (string, bool) {
		out, err := exec.Command(binary, append([]string{"faq", "--api", "http://" + n.HTTPAddr}, args...)...).CombinedOutput()
		return string(out), err == nil
	}

	bad := write("bad.csv", "question;answer;sector\nCome si paga il canone RAI?;In bolletta.;tributi\n;Senza domanda.;astronomia\n")
	if out, ok := cli("check", bad); ok || !strings.Contains(out, "line 3: question: required") || !strings.Contains(out, `line 3: sector: "astronomia"`) {
		t.Fatalf("check of a bad file: ok=%v\n%s", ok, out)
	}
	good := write("age.yaml", "- id: age-canone-rai\n  question: Come si paga il canone RAI?\n  answer: Di norma nella bolletta della luce, in dieci rate.\n  sector: tributi\n")
	if out, ok := cli("check", good); !ok || !strings.Contains(out, "ok (1 entries)") {
		t.Fatalf("check: %s", out)
	}
	if out, ok := cli("--agency", "age", "--user", "age.greco", "import", good); !ok || !strings.Contains(out, "1 created") {
		t.Fatalf("import: %s", out)
	}
	if code, body := n.get("/api/faq/search?q=canone+rai&agency=age"); code != 200 || !strings.Contains(body, `"agency":"age"`) {
		t.Fatalf("search after the import: %d %s", code, body)
	}
	// INPS may not change the Agenzia's entry: nothing is imported.
	if out, ok := cli("--agency", "inps", "import", good); ok || !strings.Contains(out, `line 1: id: "age-canone-rai" belongs to another agency`) {
		t.Fatalf("import over another agency's entry: ok=%v\n%s", ok, out)
	}
}

// Two nodes on one Redis: an entry written through one is found through
// the other.
func TestFAQSharedAcrossNodes(t *testing.T) {
	need(t, "redis-server")
	srv := redisserver.Start(t)
	a := startNode(t, nodeOptions{redisURL: srv.URL(), nodeID: "napoli"})
	b := startNode(t, nodeOptions{redisURL: srv.URL(), nodeID: "bari"})
	faqReady(t, a)
	faqReady(t, b)
	req, _ := http.NewRequest("POST", "http://"+a.HTTPAddr+"/api/faq/entries", strings.NewReader(
		`{"id": "puglia-bonus-trasporti", "question": "Chi ha diritto all'abbonamento agevolato ai trasporti in Puglia?",
		  "answer": "Gli studenti e i pendolari con ISEE sotto la soglia del bando regionale.", "sector": "generale"}`))
	req.Header.Set("X-Agency", "r_puglia")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST on node a: %s", resp.Status)
	}
	waitFor(t, 10*time.Second, "node b to find the entry", func() bool {
		_, body := b.get("/api/faq/search?q=abbonamenti+trasporto&agency=r_puglia")
		return strings.Contains(body, `"id":"puglia-bonus-trasporti"`)
	})
}

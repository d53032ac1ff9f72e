package pec

import (
	"bytes"
	"io"
	"mime"
	"net/http"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/modules/ticketing"
	"github.com/lineamica/centralino/test/mailserver"
	"github.com/smallstep/pkcs7"
)

const citizen = "mario.rossi@pec.it"

// readMail parses a message as the provider received it: headers, the
// decoded subject and the decoded text.
func readMail(t *testing.T, raw []byte) (mail.Header, string, string) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(decode(msg.Header, msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	return msg.Header, subject, string(body)
}

// The citizen's PEC address, given by the operator, brings a message in
// Italian to the provider, made as PEC providers want it; closing the
// ticket brings another, with the link to rate the service.
func TestTicketChangesSendPEC(t *testing.T) {
	e := newEnv(t)
	n := startNode(t, kv.NewMemory(), e.options())
	code := n.openTicket("c1")
	n.patch(code, `{"citizen_pec":"`+citizen+`"}`)
	eventually(t, "the message at the provider", func() bool { return len(e.smtp.Messages()) == 1 })

	got := e.smtp.Messages()[0]
	h, subject, body := readMail(t, got.Data)
	if got.From != testUser || h.Get("From") != testUser {
		t.Errorf("envelope sender %q, From %q: both must be the mailbox", got.From, h.Get("From"))
	}
	if len(got.To) != 1 || got.To[0] != citizen || h.Get("To") != citizen || h.Get("Cc") != "" || h.Get("Bcc") != "" {
		t.Errorf("recipients %v, To %q, Cc %q, Bcc %q", got.To, h.Get("To"), h.Get("Cc"), h.Get("Bcc"))
	}
	if id := h.Get("Message-ID"); !strings.HasPrefix(id, "<"+strings.ToLower(code)+".") || !strings.HasSuffix(id, "@pec.lineamica.gov.it>") {
		t.Errorf("Message-ID %q", id)
	}
	if h.Get("X-TipoRicevuta") != "completa" || h.Get("Date") == "" {
		t.Errorf("X-TipoRicevuta %q, Date %q", h.Get("X-TipoRicevuta"), h.Get("Date"))
	}
	if subject != "Linea Amica - pratica "+code+": aperta" {
		t.Errorf("subject %q", subject)
	}
	for _, want := range []string{"pratica " + code, "Ente: Regione Campania", "Stato della pratica: aperta", "Cosa succede ora:", "è stata registrata"} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "/rate/") {
		t.Error("the rating link in the opening message")
	}

	n.patch(code, `{"status":"chiuso"}`)
	eventually(t, "the closing message", func() bool { return len(e.smtp.Messages()) == 2 })
	_, subject, body = readMail(t, e.smtp.Messages()[1].Data)
	if !strings.HasSuffix(subject, ": chiusa") || !strings.Contains(body, "https://lineamica.gov.it/valuta/rate/"+code) {
		t.Errorf("closing message %q:\n%s", subject, body)
	}
	// The server has the message before the client has finished the session
	// and counted it.
	eventually(t, "both messages counted as sent", func() bool { return n.metric("centralino_pec_messages_sent_total") == 2 })
}

// The provider answers 451, then goes away; the node restarts meanwhile
// with its outbox in Redis. When the provider is back the message arrives
// once, with the Message-ID it had from the start.
func TestProviderOutageAndRestartLoseNothing(t *testing.T) {
	e := newEnv(t)
	store := redisStore(t)
	n := startNode(t, store(), e.options())
	e.smtp.FailNext(2)
	code := n.openTicket("c1")
	n.patch(code, `{"citizen_pec":"`+citizen+`"}`)
	eventually(t, "two refused attempts", func() bool { return n.metric("centralino_pec_send_failures_total", "reason", "unavailable") >= 2 })
	e.smtp.Down()
	eventually(t, "an attempt on the provider down", func() bool { return n.metric("centralino_pec_send_failures_total", "reason", "unavailable") >= 3 })
	if v := n.metric("centralino_pec_outbox_length"); v != 1 {
		t.Errorf("outbox length %v while the provider is down", v)
	}
	n.stop()
	if len(e.smtp.Messages()) != 0 {
		t.Fatal("a message arrived while refused")
	}

	n = startNode(t, store(), e.options())
	e.smtp.Up()
	eventually(t, "the message after the outage", func() bool { return len(e.smtp.Messages()) == 1 })
	eventually(t, "the outbox to empty", func() bool {
		return n.metric("centralino_pec_outbox_length") == 0 && n.metric("centralino_pec_messages_sent_total") == 1
	})
	time.Sleep(300 * time.Millisecond) // past retry_max: a second copy would be here by now
	if got := e.smtp.Messages(); len(got) != 1 {
		t.Fatalf("%d messages, want exactly 1", len(got))
	}
	h, subject, _ := readMail(t, e.smtp.Messages()[0].Data)
	if !strings.Contains(subject, code) || !strings.HasPrefix(h.Get("Message-ID"), "<"+strings.ToLower(code)) {
		t.Errorf("subject %q, Message-ID %q", subject, h.Get("Message-ID"))
	}
}

// sentID waits for the i-th message at the provider and returns its
// Message-ID.
func sentID(t *testing.T, e *env, i int) string {
	t.Helper()
	eventually(t, "the message at the provider", func() bool { return len(e.smtp.Messages()) > i })
	h, _, _ := readMail(t, e.smtp.Messages()[i].Data)
	return h.Get("Message-ID")
}

// The provider's signed receipts of acceptance and delivery show on the
// ticket, with the signed messages kept as evidence. Both signature media
// types and both digests are accepted.
func TestReceiptsRecordDelivery(t *testing.T) {
	e := newEnv(t)
	n := startNode(t, kv.NewMemory(), e.options())
	code := n.openTicket("c1")
	n.patch(code, `{"citizen_pec":"`+citizen+`"}`)
	id := sentID(t, e, 0)

	acc := pecMessage{tipo: "accettazione", header: "accettazione", subject: "ACCETTAZIONE: Linea Amica - pratica " + code + ": aperta",
		refID: id, mittente: testUser, recipients: []string{citizen}, signer: e.pki.gestore,
		sigType: "application/x-pkcs7-signature", digest: pkcs7.OIDDigestAlgorithmSHA1}.build(t)
	del := pecMessage{tipo: "avvenuta-consegna", header: "avvenuta-consegna", subject: "CONSEGNA: Linea Amica - pratica " + code + ": aperta",
		refID: id, mittente: testUser, recipients: []string{citizen}, consegna: citizen, signer: e.pki.gestore}.build(t)
	e.imap.Deliver(t, acc)
	e.imap.Deliver(t, del)

	var pm ticketing.PECMessage
	eventually(t, "the delivery on the ticket", func() bool {
		tk := n.ticket(code)
		if len(tk.PECMessages) == 1 && len(tk.PECMessages[0].Receipts) == 2 {
			pm = tk.PECMessages[0]
			return true
		}
		return false
	})
	r := pm.Recipients[0]
	if pm.MessageID != id || r.Address != citizen || r.State != modules.PECDelivered || r.Receipt != "avvenuta-consegna" {
		t.Fatalf("message %s recipient %+v", pm.MessageID, r)
	}
	if got := r.Time.UTC(); !got.Equal(time.Date(2026, 3, 2, 9, 15, 30, 0, time.UTC)) {
		t.Errorf("receipt time %v, want the daticert's", got)
	}
	if pm.Receipts[0].Receipt != "accettazione" || pm.Receipts[0].State != modules.PECAccepted {
		t.Errorf("first receipt %+v", pm.Receipts[0])
	}
	var raw []byte
	if s := n.do("GET", r.Evidence, "", &raw); s != http.StatusOK || !bytes.Equal(raw, del) {
		t.Errorf("evidence %s: status %d, %d bytes, want the delivery receipt as it arrived", r.Evidence, s, len(raw))
	}
	if v := n.metric("centralino_pec_receipts_total", "type", "avvenuta-consegna"); v != 1 {
		t.Errorf("receipts_total{avvenuta-consegna} = %v", v)
	}
	if v := n.metric("centralino_pec_quarantined_total"); v != 0 {
		t.Errorf("quarantined %v", v)
	}
}

// Receipts that are not signed, signed by a certificate no trusted
// authority issued, changed after signing, or whose unsigned headers
// contradict the signed data are not trusted: quarantined, counted, never
// on the ticket.
func TestUntrustedReceiptsQuarantined(t *testing.T) {
	e := newEnv(t)
	n := startNode(t, kv.NewMemory(), e.options())
	code := n.openTicket("c1")
	n.patch(code, `{"citizen_pec":"`+citizen+`"}`)
	id := sentID(t, e, 0)
	receipt := func(signer *mailserver.CA, tamper bool, header string) []byte {
		return pecMessage{tipo: "avvenuta-consegna", header: header, subject: "CONSEGNA: pratica " + code, refID: id,
			mittente: testUser, recipients: []string{citizen}, consegna: citizen, signer: signer, tamper: tamper}.build(t)
	}
	e.imap.Deliver(t, receipt(nil, false, "avvenuta-consegna"))
	e.imap.Deliver(t, receipt(e.pki.rogue, false, "avvenuta-consegna"))
	e.imap.Deliver(t, receipt(e.pki.gestore, true, "avvenuta-consegna"))
	e.imap.Deliver(t, receipt(e.pki.gestore, false, "errore-consegna"))
	eventually(t, "four quarantined", func() bool { return n.metric("centralino_pec_quarantined_total") == 4 })
	for reason, want := range map[string]float64{"unsigned": 1, "bad_signature": 2, "inconsistent": 1} {
		if v := n.metric("centralino_pec_quarantined_total", "reason", reason); v != want {
			t.Errorf("quarantined{%s} = %v, want %v", reason, v, want)
		}
	}
	eventually(t, "the quarantine folder", func() bool { return e.imap.Count("Quarantena") == 4 && e.imap.Count("INBOX") == 0 })
	if tk := n.ticket(code); len(tk.PECMessages) != 0 {
		t.Errorf("an untrusted receipt on the ticket: %+v", tk.PECMessages)
	}
}

// A citizen's certified message naming a ticket in its subject is attached
// to it, its iso-8859-1 quoted-printable text decoded; one naming none opens
// a ticket, whose citizen gets the acknowledgement by PEC.
func TestCitizenMessages(t *testing.T) {
	e := newEnv(t)
	n := startNode(t, kv.NewMemory(), e.options())
	code := n.openTicket("c1")
	busta := func(subject string) []byte {
		return pecMessage{tipo: "posta-certificata", header: "posta-certificata", subject: "POSTA CERTIFICATA: " + subject,
			mittente: "anna.bianchi@pec.it", recipients: []string{testUser}, signer: e.pki.gestore,
			postacert: citizenMessage("anna.bianchi@pec.it", subject, "Buongiorno, allego il modulo perché richiesto.\r\nCordiali saluti")}.build(t)
	}
	e.imap.Deliver(t, busta("Re: Linea Amica - pratica "+strings.ToLower(code)+": aperta"))
	eventually(t, "the message on the ticket", func() bool { return len(n.ticket(code).PECReceived) == 1 })
	a := n.ticket(code).PECReceived[0]
	if a.From != "anna.bianchi@pec.it" || !strings.Contains(a.Text, "allego il modulo perché richiesto.") || !strings.Contains(a.Subject, strings.ToLower(code)) {
		t.Errorf("attached %+v", a)
	}

	e.imap.Deliver(t, busta("Richiesta di informazioni sul bollo auto"))
	eventually(t, "the acknowledgement to the citizen", func() bool { return len(e.smtp.Messages()) == 1 })
	got := e.smtp.Messages()[0]
	_, subject, body := readMail(t, got.Data)
	if got.To[0] != "anna.bianchi@pec.it" || !strings.HasSuffix(subject, ": aperta") || !strings.Contains(body, "Ente: Linea Amica") {
		t.Errorf("acknowledgement to %v: %q\n%s", got.To, subject, body)
	}
	newCode := strings.TrimSuffix(strings.TrimPrefix(subject, "Linea Amica - pratica "), ": aperta")
	tk := n.ticket(newCode)
	if tk.Channel != ticketing.ChannelPEC || tk.CitizenPEC != "anna.bianchi@pec.it" || len(tk.PECReceived) != 1 ||
		tk.PECReceived[0].Subject != "Richiesta di informazioni sul bollo auto" {
		t.Errorf("ticket opened by PEC: %+v", tk)
	}
	if v := n.metric("centralino_pec_messages_received_total"); v != 2 {
		t.Errorf("received_total %v", v)
	}
}

// Mail too large, not even a message, not PEC, a busta di anomalia, or PEC
// with a broken daticert.xml is quarantined and counted, and the mailbox
// is read on: a good receipt after them is recorded.
func TestMalformedMailQuarantined(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	opts["size_limit"] = 64 << 10
	n := startNode(t, kv.NewMemory(), opts)
	code := n.openTicket("c1")
	n.patch(code, `{"citizen_pec":"`+citizen+`"}`)
	id := sentID(t, e, 0)

	e.imap.Deliver(t, []byte("Subject: CONSEGNA: x\r\n\r\n"+strings.Repeat("grande ", 10<<10)))
	e.imap.Deliver(t, []byte("\x00\x01 not a message at all"))
	e.imap.Deliver(t, []byte("Subject: ciao\r\nFrom: x@y.it\r\n\r\nuna mail qualsiasi\r\n"))
	e.imap.Deliver(t, []byte("Subject: ANOMALIA MESSAGGIO: ciao\r\nX-Trasporto: errore\r\n\r\ntesto\r\n"))
	e.imap.Deliver(t, []byte("Subject: CONSEGNA: x\r\nX-Ricevuta: avvenuta-consegna\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"b\"\r\n\r\n--b\r\ntroncato"))
	broken := pecMessage{tipo: "avvenuta-consegna\"><<", header: "", subject: "CONSEGNA: x", refID: id, mittente: testUser,
		recipients: []string{citizen}, consegna: citizen, signer: e.pki.gestore}.build(t)
	e.imap.Deliver(t, broken)
	e.imap.Deliver(t, pecMessage{tipo: "avvenuta-consegna", header: "avvenuta-consegna", subject: "CONSEGNA: pratica " + code, refID: id,
		mittente: testUser, recipients: []string{citizen}, consegna: citizen, signer: e.pki.gestore}.build(t))

	eventually(t, "the good receipt", func() bool {
		tk := n.ticket(code)
		return len(tk.PECMessages) == 1 && tk.PECMessages[0].Recipients[0].State == modules.PECDelivered
	})
	for reason, want := range map[string]float64{"too_large": 1, "not_pec": 1, "anomaly": 1, "malformed": 3} {
		if v := n.metric("centralino_pec_quarantined_total", "reason", reason); v != want {
			t.Errorf("quarantined{%s} = %v, want %v", reason, v, want)
		}
	}
	if v := n.metric("centralino_pec_quarantined_total"); v != 6 {
		t.Errorf("quarantined %v, want 6", v)
	}
	if e.imap.Count("Quarantena") != 6 {
		t.Errorf("%d in the quarantine folder, want 6", e.imap.Count("Quarantena"))
	}
}

func TestBadOptions(t *testing.T) {
	e := newEnv(t)
	for name, tc := range map[string]struct {
		edit func(map[string]any)
		want string
	}{
		"no smtp":          {func(o map[string]any) { delete(o, "smtp_addr") }, `option "smtp_addr"`},
		"tls mode":         {func(o map[string]any) { o["smtp_tls"] = "none" }, `option "smtp_tls"`},
		"no trust":         {func(o map[string]any) { delete(o, "trust_file") }, `option "trust_file"`},
		"trust not a file": {func(o map[string]any) { o["trust_file"] = "/nonexistent.pem" }, `option "trust_file"`},
		"from":             {func(o map[string]any) { o["from"] = "Linea Amica <" + testUser + ">" }, `option "from"`},
		"rating url":       {func(o map[string]any) { o["rating_url"] = "lineamica.gov.it" }, `option "rating_url"`},
		"receipt type":     {func(o map[string]any) { o["receipt_type"] = "lunga" }, `option "receipt_type"`},
		"notify":           {func(o map[string]any) { o["notify"] = []any{"chiuso", "dimenticato"} }, `option "notify"`},
		"unknown":          {func(o map[string]any) { o["passwd"] = "x" }, `option "passwd": unknown option`},
	} {
		opts := e.options()
		tc.edit(opts)
		_, err := modules.Start(t.Context(), []modules.Config{{Name: "pec", Options: opts}},
			modules.Deps{Bus: modules.NewBus(modules.BusOptions{}), Mux: http.NewServeMux(), Store: kv.NewMemory()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %s", name, err, tc.want)
		} else if strings.Contains(err.Error(), testPassword) {
			t.Errorf("%s: the password in %v", name, err)
		}
	}
}

// The example config's options are the module's: with the files it names
// in place, the module starts with them.
func TestExampleConfig(t *testing.T) {
	cfg, err := configs.Load("../../configs/example-pec.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	for _, m := range cfg.Modules {
		if m.Name == "pec" {
			m.Options["trust_file"] = e.pki.trustFile
			m.Options["smtp_addr"], m.Options["imap_addr"] = "127.0.0.1:1", "" // nothing to reach in a test
		}
	}
	bus := modules.NewBus(modules.BusOptions{})
	r, err := modules.Start(t.Context(), cfg.Modules, modules.Deps{Bus: bus, Mux: http.NewServeMux(), Store: kv.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	bus.Close(t.Context())
	if err := r.Stop(t.Context()); err != nil {
		t.Error(err)
	}
}

// Only the statuses listed in notify bring a message; the opening and a
// new address always do.
func TestNotifyChoosesStatuses(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	opts["notify"] = []any{"chiuso"}
	n := startNode(t, kv.NewMemory(), opts)
	code := n.openTicket("c1")
	n.patch(code, `{"citizen_pec":"`+citizen+`"}`)
	n.patch(code, `{"status":"risolto"}`)
	n.patch(code, `{"status":"chiuso"}`)
	eventually(t, "two messages", func() bool { return len(e.smtp.Messages()) == 2 })
	for i, want := range []string{": aperta", ": chiusa"} {
		if _, subject, _ := readMail(t, e.smtp.Messages()[i].Data); !strings.HasSuffix(subject, want) {
			t.Errorf("message %d: %q, want %s", i, subject, want)
		}
	}
}

// Submission over implicit TLS works; a server that offers no TLS at all
// never gets the password, and the message waits in the outbox.
func TestSubmissionTLSModes(t *testing.T) {
	e := newEnv(t)
	cert := e.pki.server.TLSCert()
	for _, tc := range []struct {
		name     string
		mode     mailserver.Mode
		option   string
		delivers bool
	}{
		{"implicit", mailserver.ImplicitTLS, "tls", true},
		{"none", mailserver.NoTLS, "starttls", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := mailserver.StartSMTP(t, tc.mode, cert, testUser, testPassword)
			opts := e.options()
			opts["smtp_addr"], opts["smtp_tls"] = srv.Addr, tc.option
			n := startNode(t, kv.NewMemory(), opts)
			n.patch(n.openTicket("c1"), `{"citizen_pec":"`+citizen+`"}`)
			if tc.delivers {
				eventually(t, "the message", func() bool { return len(srv.Messages()) == 1 })
				return
			}
			eventually(t, "two attempts", func() bool { return n.metric("centralino_pec_send_failures_total", "reason", "unavailable") >= 2 })
			if srv.Auths() != 0 || len(srv.Messages()) != 0 || n.metric("centralino_pec_outbox_length") != 1 {
				t.Errorf("credentials sent %d times, %d messages, outbox %v", srv.Auths(), len(srv.Messages()), n.metric("centralino_pec_outbox_length"))
			}
		})
	}
}

// A preavviso and then an avviso di mancata consegna: the ticket shows the
// message not delivered, with the provider's reason.
func TestDeliveryFailureRecorded(t *testing.T) {
	e := newEnv(t)
	n := startNode(t, kv.NewMemory(), e.options())
	code := n.openTicket("c1")
	n.patch(code, `{"citizen_pec":"`+citizen+`"}`)
	id := sentID(t, e, 0)
	receipt := func(tipo, subject, errore, esteso string) []byte {
		return pecMessage{tipo: tipo, header: tipo, subject: subject + ": pratica " + code, refID: id, mittente: testUser,
			recipients: []string{citizen}, consegna: citizen, errore: errore, esteso: esteso, signer: e.pki.gestore}.build(t)
	}
	e.imap.Deliver(t, receipt("preavviso-errore-consegna", "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO", "altro", ""))
	e.imap.Deliver(t, receipt("errore-consegna", "AVVISO DI MANCATA CONSEGNA", "no-dest", "5.1.1 - Gestore di prova - casella inesistente"))
	var r ticketing.PECRecipient
	eventually(t, "the failure on the ticket", func() bool {
		tk := n.ticket(code)
		if len(tk.PECMessages) == 1 && len(tk.PECMessages[0].Receipts) == 2 {
			r = tk.PECMessages[0].Recipients[0]
			return true
		}
		return false
	})
	if r.State != modules.PECNotDelivered || r.Receipt != "errore-consegna" || r.Error != "5.1.1 - Gestore di prova - casella inesistente" {
		t.Errorf("recipient %+v", r)
	}
	if v := n.metric("centralino_pec_receipts_total", "type", "preavviso-errore-consegna"); v != 1 {
		t.Errorf("receipts_total{preavviso} = %v", v)
	}
}

// The mailbox is read over STARTTLS too.
func TestMailboxOverSTARTTLS(t *testing.T) {
	e := newEnv(t)
	mbox := mailserver.StartIMAP(t, mailserver.STARTTLS, e.pki.server.TLSCert(), testUser, testPassword)
	opts := e.options()
	opts["imap_addr"], opts["imap_tls"] = mbox.Addr, "starttls"
	n := startNode(t, kv.NewMemory(), opts)
	mbox.Deliver(t, []byte("Subject: ciao\r\n\r\nnon PEC\r\n"))
	eventually(t, "the mail read and quarantined", func() bool { return mbox.Count("Quarantena") == 1 })
	if v := n.metric("centralino_pec_quarantined_total", "reason", "not_pec"); v != 1 {
		t.Errorf("quarantined %v", v)
	}
}

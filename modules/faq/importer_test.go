package faq

import (
	"strings"
	"testing"
)

func TestImportFormats(t *testing.T) {
	for _, tc := range []struct {
		format, data string
	}{
		{FormatYAML, `
- id: vecchiaia
  question: Quando si va in pensione?
  answer: A 67 anni.
  agency: inps
  sector: pensions
  tags: [pensione, età]
- question: Come si rinnova la tessera?
  answer: Arriva per posta.
  sector: Sanità
  tags: tessera, scadenza
`},
		{FormatYAML, `entries:
  - id: vecchiaia
    question: "Quando si va in pensione?"
    answer: A 67 anni.
    agency: inps
    sector: pensioni
    tags: [pensione, età]
  - {question: "Come si rinnova la tessera?", answer: "Arriva per posta.", sector: sanita, tags: [tessera, scadenza]}
`},
		{FormatJSON, `[
 {"id": "vecchiaia", "question": "Quando si va in pensione?", "answer": "A 67 anni.", "agency": "inps", "sector": "pensioni", "tags": ["pensione", "età"]},
 {"question": "Come si rinnova la tessera?", "answer": "Arriva per posta.", "sector": "health", "tags": ["Tessera", "scadenza", "tessera"]}
]`},
		{FormatJSON, `{"entries": [
 {"id": "vecchiaia", "question": "Quando si va in pensione?", "answer": "A 67 anni.", "agency": "inps", "sector": "pensioni", "tags": ["pensione", "età"]},
 {"question": "Come si rinnova la tessera?", "answer": "Arriva per posta.", "sector": "sanità", "tags": ["tessera", "scadenza"]}
]}`},
		{FormatCSV, "\uFEFFid,question,answer,agency,sector,tags\n" +
			"vecchiaia,Quando si va in pensione?,A 67 anni.,inps,pensioni,pensione;età\n" +
			",Come si rinnova la tessera?,\"Arriva\nper posta.\",,sanità,tessera;scadenza\n"},
		{FormatCSV, "question;answer;sector;agency;tags;id\n" +
			"Quando si va in pensione?;A 67 anni.;pensioni;inps;pensione, età;vecchiaia\n" +
			"Come si rinnova la tessera?;Arriva per posta.;sanità;;tessera, scadenza;\n"},
	} {
		ins, err := parseImport(tc.format, []byte(tc.data))
		if err != nil {
			t.Errorf("%s %.30q: %v", tc.format, tc.data, err)
			continue
		}
		if len(ins) != 2 {
			t.Errorf("%s: %d entries, want 2", tc.format, len(ins))
			continue
		}
		a, b := ins[0].Input, ins[1].Input
		if a.ID != "vecchiaia" || a.Agency != "inps" || a.Sector != "pensioni" || strings.Join(a.Tags, ",") != "pensione,età" {
			t.Errorf("%s: first entry %+v", tc.format, a)
		}
		if b.ID != "" || b.Agency != "" || b.Sector != "sanità" || strings.Join(b.Tags, ",") != "tessera,scadenza" ||
			!strings.HasPrefix(b.Answer, "Arriva") {
			t.Errorf("%s: second entry %+v", tc.format, b)
		}
	}
}

// Every error names the line of the file it is on.
func TestImportErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		name, format, data string
		want               []string
	}{
		{"yaml: missing answer, bad sector, unknown field", FormatYAML, `
- question: Prima?
  answer: Sì.
  sector: generale
- question: Seconda?
  sector: astronomia
  colour: blue
`, []string{`line 5: answer: required`, `line 6: sector: "astronomia" is not one of`, `line 7: colour: unknown field`}},
		{"yaml: syntax", FormatYAML, "- question: a\n  answer: b\n sector: [c\n", []string{"line 2: did not find expected"}},
		{"yaml: not a list", FormatYAML, "question: a\n", []string{`line 1: want a list of entries, or "entries:"`}},
		{"yaml: duplicate id", FormatYAML, "- {id: a, question: q, answer: r, sector: lavoro}\n- {id: a, question: q2, answer: r2, sector: lavoro}\n",
			[]string{`line 2: id: "a" is also on line 1`}},
		{"json: second entry has no question", FormatJSON, `[
  {"question": "Prima?", "answer": "Sì.", "sector": "generale"},
  {
    "answer": "Senza domanda.", "sector": "generale"
  }
]`, []string{"line 3: question: required"}},
		{"json: syntax", FormatJSON, "[\n {\"question\": \"a\",\n  \"answer\": }\n]", []string{"line 3: invalid character"}},
		{"json: wrong type", FormatJSON, "[\n\n {\"question\": \"a\", \"answer\": \"b\", \"sector\": \"lavoro\", \"tags\": \"x\"}]",
			[]string{"line 3: tags: want []string, not string"}},
		{"json: unknown field", FormatJSON, "[{\"question\": \"a\", \"answer\": \"b\", \"sector\": \"lavoro\",\n \"owner\": \"x\"}]",
			[]string{"line 1: owner: unknown field"}},
		{"json: truncated", FormatJSON, "[\n{\"question\": \"a\"", []string{"line 2: "}},
		{"csv: bad agency and field count", FormatCSV, "question,answer,sector,agency\nA?,B.,lavoro,inps\nC?,D.,lavoro,in ps\nE?,F.\n",
			[]string{`line 3: agency: "in ps" is not an IPA code`, "line 4: 2 fields, the header has 4"}},
		{"csv: quoted field over two lines, then the empty answer", FormatCSV, "question,answer,sector\n\"A\nB?\",,lavoro\n",
			[]string{"line 3: answer: required"}},
		{"csv: bare quote", FormatCSV, "question,answer,sector\nA?,B \"C\",lavoro\n", []string{`line 2: bare " in non-quoted-field`}},
		{"csv: missing column", FormatCSV, "question,sector\nA?,lavoro\n", []string{`line 1: the header has no "answer" column`}},
		{"csv: unknown column", FormatCSV, "question,answer,sector,colour\n", []string{`line 1: column 4: unknown column "colour"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseImport(tc.format, []byte(tc.data))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

package faq

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Formats of an import file.
const (
	FormatYAML = "yaml"
	FormatJSON = "json"
	FormatCSV  = "csv"
)

// maxImportErrors bounds the errors reported for one file.
const maxImportErrors = 50

// lineInput is an entry of an import file and the line it starts on.
type lineInput struct {
	Line int
	Input
	// fieldLines are the lines of the fields not on Line, where the format
	// tells them.
	fieldLines map[string]int
}

// lineOf returns the line of a field.
func (in *lineInput) lineOf(field string) int {
	if l, ok := in.fieldLines[field]; ok {
		return l
	}
	return in.Line
}

// lineError is an error at a line of an import file.
type lineError struct {
	Line int
	Err  error
}

func (e lineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// importErrors are the errors of a file, each naming its line.
type importErrors []lineError

func (es importErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// FormatOf tells an import file's format by its extension: "" if unknown.
func FormatOf(name string) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml":
		return FormatYAML
	case ".json":
		return FormatJSON
	case ".csv":
		return FormatCSV
	}
	return ""
}

// Check reads an import file as the API would, without its rights, and
// returns how many entries it has or its errors, one line each.
func Check(format string, data []byte) (int, error) {
	ins, err := parseImport(format, data)
	return len(ins), err
}

// sorted orders the errors by line and keeps the first maxImportErrors.
func (es importErrors) sorted() importErrors {
	slices.SortStableFunc(es, func(a, b lineError) int { return a.Line - b.Line })
	return es[:min(len(es), maxImportErrors)]
}

// parseImport reads the entries of a file in the given format, normalized
// and validated. Any error fails the whole file, so that a file is
// imported entirely or not at all; an importErrors comes with the entries
// read, for more checks to report with it.
func parseImport(format string, data []byte) ([]lineInput, error) {
	data = bytes.TrimPrefix(data, []byte("\uFEFF")) // spreadsheets write a BOM
	var (
		ins []lineInput
		err error
	)
	switch format {
	case FormatYAML:
		ins, err = parseYAML(data)
	case FormatJSON:
		ins, err = parseJSON(data)
	case FormatCSV:
		ins, err = parseCSV(data)
	default:
		return nil, fmt.Errorf("unknown format %q: want yaml, json or csv", format)
	}
	var errs importErrors
	if err != nil {
		if !errors.As(err, &errs) {
			return nil, err
		}
	}
	seen := map[string]int{}
	for i := range ins {
		in := &ins[i]
		in.normalize()
		if err := in.validate(); err != nil {
			for _, e := range unjoin(err) {
				line := in.Line
				var fe fieldError
				if errors.As(e, &fe) {
					line = in.lineOf(fe.Field)
				}
				errs = append(errs, lineError{line, e})
			}
		}
		if in.ID != "" {
			if first, ok := seen[in.ID]; ok {
				errs = append(errs, lineError{in.Line, fmt.Errorf("id: %q is also on line %d", in.ID, first)})
			}
			seen[in.ID] = in.Line
		}
	}
	if len(errs) > 0 {
		return ins, errs.sorted()
	}
	if len(ins) == 0 {
		return nil, errors.New("the file has no entries")
	}
	return ins, nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// parseYAML reads a list of entries, or a mapping whose "entries" is one.
func parseYAML(data []byte) ([]lineInput, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlSyntax(err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	list := doc.Content[0]
	if list.Kind == yaml.MappingNode {
		list = nil
		for i := 0; i+1 < len(doc.Content[0].Content); i += 2 {
			if doc.Content[0].Content[i].Value == "entries" {
				list = doc.Content[0].Content[i+1]
			}
		}
		if list == nil {
			return nil, importErrors{{doc.Content[0].Line, errors.New(`want a list of entries, or "entries:" and a list`)}}
		}
	}
	if list.Kind != yaml.SequenceNode {
		return nil, importErrors{{list.Line, errors.New("want a list of entries")}}
	}
	var (
		out  []lineInput
		errs importErrors
	)
	for _, item := range list.Content {
		if item.Kind != yaml.MappingNode {
			errs = append(errs, lineError{item.Line, errors.New("an entry must be a mapping (question:, answer:...)")})
			continue
		}
		in := lineInput{Line: item.Line, fieldLines: map[string]int{}}
		for i := 0; i+1 < len(item.Content); i += 2 {
			k, v := item.Content[i], item.Content[i+1]
			in.fieldLines[k.Value] = k.Line
			if err := yamlField(&in.Input, k.Value, v); err != nil {
				errs = append(errs, lineError{k.Line, err})
			}
		}
		out = append(out, in)
	}
	if len(errs) > 0 {
		return out, errs
	}
	return out, nil
}

func yamlField(in *Input, name string, v *yaml.Node) error {
	if name == "tags" {
		switch v.Kind {
		case yaml.SequenceNode:
			for _, t := range v.Content {
				if t.Kind != yaml.ScalarNode {
					return errors.New("tags: want a list of words")
				}
				in.Tags = append(in.Tags, t.Value)
			}
			return nil
		case yaml.ScalarNode:
			in.Tags = splitTags(v.Value)
			return nil
		}
		return errors.New("tags: want a list of words")
	}
	dst := map[string]*string{"id": &in.ID, "question": &in.Question, "answer": &in.Answer, "agency": &in.Agency, "sector": &in.Sector}[name]
	if dst == nil {
		return fmt.Errorf("%s: unknown field (want id, question, answer, agency, sector, tags)", name)
	}
	if v.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: want text", name)
	}
	*dst = v.Value
	return nil
}

// yamlSyntax turns yaml.v3's "yaml: line N: ..." into a lineError.
func yamlSyntax(err error) error {
	var line int
	msg := err.Error()
	if _, scanErr := fmt.Sscanf(msg, "yaml: line %d:", &line); scanErr == nil {
		_, rest, _ := strings.Cut(msg, ": ")
		_, rest, _ = strings.Cut(rest, ": ")
		return importErrors{{line, errors.New(rest)}}
	}
	return fmt.Errorf("not YAML: %w", err)
}

// parseJSON reads an array of entries, or an object whose "entries" is one.
func parseJSON(data []byte) ([]lineInput, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	fail := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return importErrors{{lineAt(data, int(se.Offset)), err}}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return importErrors{{lineAt(data, len(data)), errors.New("unexpected end of the file")}}
		}
		return importErrors{{lineAt(data, int(dec.InputOffset())), err}}
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fail(err)
	}
	if tok == json.Delim('{') {
		// {"entries": [...]}
		if key, err := dec.Token(); err != nil || key != "entries" {
			return nil, importErrors{{lineAt(data, int(dec.InputOffset())), errors.New(`want an array of entries, or {"entries": [...]}`)}}
		}
		if tok, err = dec.Token(); err != nil {
			return nil, fail(err)
		}
	}
	if tok != json.Delim('[') {
		return nil, importErrors{{lineAt(data, int(dec.InputOffset())), errors.New("want an array of entries")}}
	}
	var out []lineInput
	for dec.More() {
		in := lineInput{Line: lineAt(data, startOfValue(data, int(dec.InputOffset())))}
		if err := dec.Decode(&in.Input); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return nil, fail(err)
			}
			return nil, importErrors{{in.Line, jsonMessage(err)}}
		}
		out = append(out, in)
	}
	return out, nil
}

// jsonMessage says what is wrong with an entry, in the terms of the file.
func jsonMessage(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: want %s, not %s", te.Field, te.Type, te.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return fmt.Errorf("%s: unknown field (want id, question, answer, agency, sector, tags)", strings.Trim(name, `"`))
	}
	return errors.New(msg)
}

// startOfValue skips the separators after a token: the next value starts
// where they end.
func startOfValue(data []byte, off int) int {
	for off < len(data) && strings.IndexByte(" \t\r\n,", data[off]) >= 0 {
		off++
	}
	return off
}

func lineAt(data []byte, off int) int {
	return bytes.Count(data[:min(max(off, 0), len(data))], []byte("\n")) + 1
}

// csvColumns are the columns an import file may have; question, answer and
// sector are required.
var csvColumns = []string{"id", "question", "answer", "agency", "sector", "tags"}

// parseCSV reads a header row naming the columns, then an entry per row.
// Fields are separated by commas, or by semicolons if the header has no
// comma (as Italian spreadsheets write them); tags are separated by ";" or
// "," within their field.
func parseCSV(data []byte) ([]lineInput, error) {
	r := csv.NewReader(bytes.NewReader(data))
	header, _, _ := bytes.Cut(data, []byte("\n"))
	if !bytes.Contains(header, []byte(",")) && bytes.Contains(header, []byte(";")) {
		r.Comma = ';'
	}
	cols, err := r.Read()
	if err != nil {
		return nil, csvError(err)
	}
	pos := map[string]int{}
	for i, c := range cols {
		c = strings.ToLower(strings.TrimSpace(c))
		if !slices.Contains(csvColumns, c) {
			return nil, importErrors{{1, fmt.Errorf("column %d: unknown column %q (want %s)", i+1, c, strings.Join(csvColumns, ", "))}}
		}
		if _, dup := pos[c]; dup {
			return nil, importErrors{{1, fmt.Errorf("column %q appears twice", c)}}
		}
		pos[c] = i
	}
	for _, c := range []string{"question", "answer", "sector"} {
		if _, ok := pos[c]; !ok {
			return nil, importErrors{{1, fmt.Errorf("the header has no %q column", c)}}
		}
	}
	var (
		out  []lineInput
		errs importErrors
	)
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount) {
				errs = append(errs, lineError{pe.StartLine, fmt.Errorf("%d fields, the header has %d", len(rec), len(cols))})
				continue
			}
			return nil, append(errs, csvError(err).(importErrors)...)
		}
		line, _ := r.FieldPos(0)
		lines := map[string]int{}
		field := func(name string) string {
			if i, ok := pos[name]; ok {
				lines[name], _ = r.FieldPos(i)
				return rec[i]
			}
			return ""
		}
		out = append(out, lineInput{Line: line, fieldLines: lines, Input: Input{
			ID: field("id"), Question: field("question"), Answer: field("answer"),
			Agency: field("agency"), Sector: field("sector"), Tags: splitTags(field("tags")),
		}})
	}
	if len(errs) > 0 {
		return out, errs
	}
	return out, nil
}

func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return importErrors{{pe.Line, pe.Err}}
	}
	if errors.Is(err, io.EOF) {
		return importErrors{{1, errors.New("the file is empty: want a header row")}}
	}
	return importErrors{{1, err}}
}

func splitTags(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' })
}

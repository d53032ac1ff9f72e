package faq

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Entry is one question and its answer.
type Entry struct {
	ID       string `json:"id"`
	Question string `json:"question"`
	Answer   string `json:"answer"`
	// Agency is the IPA code of the owner; "" for a network-wide entry,
	// edited by the network centre.
	Agency string   `json:"agency"`
	Sector string   `json:"sector"`
	Tags   []string `json:"tags"`
	// Version counts the edits, from 1; UpdatedAt and UpdatedBy say when and
	// by whom (agency/user) this version was written.
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

// Input is an entry as written by its editors: through the API or in an
// import file.
type Input struct {
	ID       string   `json:"id" yaml:"id"`
	Question string   `json:"question" yaml:"question"`
	Answer   string   `json:"answer" yaml:"answer"`
	Agency   string   `json:"agency" yaml:"agency"`
	Sector   string   `json:"sector" yaml:"sector"`
	Tags     []string `json:"tags" yaml:"tags"`
}

// Limits of an entry.
const (
	maxQuestion = 500
	maxAnswer   = 8000
	maxTags     = 20
	maxTag      = 40
)

var (
	idPattern     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
	agencyPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
)

// The sectors of the FAQ, in the order the web page lists them.
var sectors = []string{"generale", "pensioni", "tributi", "sanità", "lavoro", "turismo", "anagrafe"}

// sectorAliases maps what editors and the directory write (the directory's
// sectors are English) to a sector.
var sectorAliases = map[string]string{
	"general": "generale", "pensions": "pensioni", "tax": "tributi", "health": "sanità",
	"labour": "lavoro", "labor": "lavoro", "tourism": "turismo", "registry": "anagrafe",
	"sanita": "sanità", "sanita'": "sanità",
}

// Sector returns the FAQ sector named by s (Italian, accented or not, or a
// directory sector), and whether there is one.
func Sector(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if slices.Contains(sectors, s) {
		return s, true
	}
	a, ok := sectorAliases[s]
	return a, ok
}

// normalize trims the input, lower-cases tags and sector, and drops empty
// and repeated tags.
func (in *Input) normalize() {
	in.ID = strings.TrimSpace(in.ID)
	in.Question = strings.TrimSpace(in.Question)
	in.Answer = strings.TrimSpace(in.Answer)
	in.Agency = strings.TrimSpace(in.Agency)
	if s, ok := Sector(in.Sector); ok {
		in.Sector = s
	}
	tags := []string{}
	for _, t := range in.Tags {
		t = strings.ToLower(strings.TrimSpace(t))
		if t != "" && !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	in.Tags = tags
}

// fieldError is what is wrong with one field of an input.
type fieldError struct {
	Field string
	Err   error
}

func (e fieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// validate checks a normalized input; each error is a fieldError.
func (in *Input) validate() error {
	var errs []error
	field := func(name, format string, args ...any) {
		errs = append(errs, fieldError{name, fmt.Errorf(format, args...)})
	}
	if in.ID != "" && !idPattern.MatchString(in.ID) {
		field("id", "%q must be 1 to 64 lower-case letters, digits and '-', starting with a letter or digit", in.ID)
	}
	switch n := utf8.RuneCountInString(in.Question); {
	case n == 0:
		field("question", "required")
	case n > maxQuestion:
		field("question", "longer than %d characters", maxQuestion)
	}
	switch n := utf8.RuneCountInString(in.Answer); {
	case n == 0:
		field("answer", "required")
	case n > maxAnswer:
		field("answer", "longer than %d characters", maxAnswer)
	}
	if in.Agency != "" && !agencyPattern.MatchString(in.Agency) {
		field("agency", "%q is not an IPA code", in.Agency)
	}
	if !slices.Contains(sectors, in.Sector) {
		field("sector", "%q is not one of %s", in.Sector, strings.Join(sectors, ", "))
	}
	if len(in.Tags) > maxTags {
		field("tags", "more than %d", maxTags)
	}
	for _, t := range in.Tags {
		if utf8.RuneCountInString(t) > maxTag {
			field("tags", "%q is longer than %d characters", t, maxTag)
			break
		}
	}
	return errors.Join(errs...)
}

// same says whether the entry already holds what in says.
func (e *Entry) same(in *Input) bool {
	return e.Question == in.Question && e.Answer == in.Answer && e.Agency == in.Agency &&
		e.Sector == in.Sector && slices.Equal(e.Tags, in.Tags)
}

// networkKey is how a network-wide entry's owner is indexed: a keyword
// field holds no empty term.
const networkKey = "_rete"

func ownerKey(agency string) string {
	if agency == "" {
		return networkKey
	}
	return agency
}

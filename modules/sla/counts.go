package sla

import "math"

// field is one counter of a bucket, as named in the store.
type field string

const (
	fOffered        field = "offered"
	fAnswered       field = "answered"
	fAnsweredInSL   field = "answered_in_sl" // answered within the service-level threshold
	fWaitMS         field = "wait_ms"        // sum of the answered calls' waits
	fAbandoned      field = "abandoned"      // caller hung up before an answer, after the short-abandon threshold
	fShortAbandoned field = "short_abandoned"
	fUnanswered     field = "unanswered" // busy, no answer, refused or failed
	fTalked         field = "talked"     // answered calls that ended
	fTalkMS         field = "talk_ms"
	fTransferredOut field = "transferred_out"
	fOverflowed     field = "overflowed"
	fRatingOffered  field = "rating_offered"
	fRatingByPhone  field = "rating_phone" // votes given in the call the survey was offered in
	fRating1        field = "rating_1"
	fRating2        field = "rating_2"
	fRating3        field = "rating_3"
)

var fields = []field{fOffered, fAnswered, fAnsweredInSL, fWaitMS, fAbandoned, fShortAbandoned, fUnanswered,
	fTalked, fTalkMS, fTransferredOut, fOverflowed, fRatingOffered, fRatingByPhone, fRating1, fRating2, fRating3}

// Counts are the raw counters of a bucket (or of a sum of buckets).
type Counts map[field]int64

func (c Counts) add(o Counts) {
	for f, n := range o {
		c[f] += n
	}
}

// Figures are what the API and the page show for a period.
type Figures struct {
	Offered                 int64 `json:"offered"`
	Answered                int64 `json:"answered"`
	AnsweredWithinThreshold int64 `json:"answered_within_threshold"`
	Abandoned               int64 `json:"abandoned"`
	ShortAbandoned          int64 `json:"short_abandoned"`
	Unanswered              int64 `json:"unanswered"`
	TransferredOut          int64 `json:"transferred_out"`
	Overflowed              int64 `json:"overflowed"`
	// Ratios (0..1) and averages (seconds); null when nothing to divide by.
	ServiceLevel       *float64 `json:"service_level"`
	AbandonmentRate    *float64 `json:"abandonment_rate"`
	AnswerRate         *float64 `json:"answer_rate"`
	AverageSpeedAnswer *float64 `json:"asa_seconds"`
	AverageHandleTime  *float64 `json:"aht_seconds"`
	Ratings            Ratings  `json:"ratings"`
}

// Ratings is the distribution of the emoticon votes.
type Ratings struct {
	Offered    int64 `json:"offered"`
	Positive   int64 `json:"positive"`
	Sufficient int64 `json:"sufficient"`
	Negative   int64 `json:"negative"`
	// NotGiven are the surveys offered in a call that got no vote in it.
	NotGiven int64 `json:"not_given"`
}

// Figures derives the published figures from the counters. The definitions
// are those of docs/sla.md: short abandons leave the base of every ratio.
func (c Counts) Figures() Figures {
	f := Figures{
		Offered:                 c[fOffered],
		Answered:                c[fAnswered],
		AnsweredWithinThreshold: c[fAnsweredInSL],
		Abandoned:               c[fAbandoned],
		ShortAbandoned:          c[fShortAbandoned],
		Unanswered:              c[fUnanswered],
		TransferredOut:          c[fTransferredOut],
		Overflowed:              c[fOverflowed],
		Ratings: Ratings{
			Offered:    c[fRatingOffered],
			Positive:   c[fRating1],
			Sufficient: c[fRating2],
			Negative:   c[fRating3],
			NotGiven:   max(c[fRatingOffered]-c[fRatingByPhone], 0),
		},
	}
	base := c[fOffered] - c[fShortAbandoned]
	f.ServiceLevel = ratio(c[fAnsweredInSL], base)
	f.AbandonmentRate = ratio(c[fAbandoned], base)
	f.AnswerRate = ratio(c[fAnswered], base)
	f.AverageSpeedAnswer = seconds(c[fWaitMS], c[fAnswered])
	f.AverageHandleTime = seconds(c[fTalkMS], c[fTalked])
	return f
}

func ratio(n, d int64) *float64 {
	if d <= 0 {
		return nil
	}
	r := float64(n) / float64(d)
	return &r
}

func seconds(ms, n int64) *float64 {
	if n <= 0 {
		return nil
	}
	s := math.Round(float64(ms)/float64(n)) / 1000
	return &s
}

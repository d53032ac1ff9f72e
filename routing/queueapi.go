package routing

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lineamica/centralino/routing/directory"
)

// QueueAPI serves the operators' states over HTTP, for supervisors' and
// operators' desk applications:
//
//	GET /api/queues                       every agency's queue and its logged-in operators
//	GET /api/queues/{agency}              one agency's
//	GET /api/operators/{username}         one operator's state
//	PUT /api/operators/{username}         {"state": "available" | "paused" | "logged-out"}
//
// Every request names its agency in an X-Agency header (set by the front
// end that authenticated the caller, as for the ticketing API) and sees and
// changes only that agency's queue and operators; without it the answer is
// 401.
type QueueAPI struct {
	Dir    directory.Store
	Queues QueueState
}

// LoggedOut is the state of an operator outside every queue, in the API.
const LoggedOut OperatorState = "logged-out"

// QueueView is one agency's queue in the API.
type QueueView struct {
	Agency    string         `json:"agency"`
	Strategy  string         `json:"strategy"`
	Operators []OperatorView `json:"operators"`
}

// OperatorView is one operator in the API.
type OperatorView struct {
	Username  string        `json:"username"`
	Agency    string        `json:"agency"`
	State     OperatorState `json:"state"`
	IdleSince time.Time     `json:"idle_since,omitzero"`
	Calls     int           `json:"calls"` // since login
}

// Register mounts the API on mux.
func (a *QueueAPI) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/queues", scoped(a.listQueues))
	mux.HandleFunc("GET /api/queues/{agency}", scoped(a.getQueue))
	mux.HandleFunc("GET /api/operators/{username}", scoped(a.getOperator))
	mux.HandleFunc("PUT /api/operators/{username}", scoped(a.putOperator))
}

// scoped refuses requests that do not say whose they are.
func scoped(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Agency") == "" {
			apiError(w, http.StatusUnauthorized, "X-Agency header required")
			return
		}
		h(w, r)
	}
}

func (a *QueueAPI) allowed(r *http.Request, agency string) bool {
	return r.Header.Get("X-Agency") == agency
}

func (a *QueueAPI) listQueues(w http.ResponseWriter, r *http.Request) {
	agencies, err := a.Dir.Agencies(r.Context())
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, "directory unavailable")
		return
	}
	out := []QueueView{}
	for _, ag := range agencies {
		if !a.allowed(r, ag.Code) || !hasQueue(ag) {
			continue
		}
		v, err := a.queue(r, ag)
		if err != nil {
			apiError(w, http.StatusServiceUnavailable, "queue state unavailable")
			return
		}
		out = append(out, v)
	}
	writeAPI(w, http.StatusOK, out)
}

func (a *QueueAPI) getQueue(w http.ResponseWriter, r *http.Request) {
	ag, err := a.Dir.Agency(r.Context(), r.PathValue("agency"))
	switch {
	case errors.Is(err, directory.ErrNotFound) || err == nil && !a.allowed(r, ag.Code):
		apiError(w, http.StatusNotFound, "no such agency")
		return
	case err != nil:
		apiError(w, http.StatusServiceUnavailable, "directory unavailable")
		return
	}
	v, err := a.queue(r, ag)
	answer(w, v, err)
}

func (a *QueueAPI) queue(r *http.Request, ag directory.Agency) (QueueView, error) {
	ops, err := a.Queues.Operators(r.Context(), ag.Code)
	if err != nil {
		return QueueView{}, err
	}
	v := QueueView{Agency: ag.Code, Strategy: string(cmpStrategy(ag)), Operators: []OperatorView{}}
	for _, o := range ops {
		v.Operators = append(v.Operators, viewOf(o))
	}
	return v, nil
}

// hasQueue: an agency with public numbers rings its operators, by a queue
// strategy or all at once.
func hasQueue(ag directory.Agency) bool { return len(ag.Numbers) > 0 }

func cmpStrategy(ag directory.Agency) Strategy {
	if ag.Queue.Strategy == "" {
		return RingAll
	}
	return Strategy(ag.Queue.Strategy)
}

// operator finds the operator named in the path, answering 404 for unknown
// users, non-operators and users outside the caller's scope alike.
func (a *QueueAPI) operator(w http.ResponseWriter, r *http.Request) (directory.User, bool) {
	u, err := a.Dir.User(r.Context(), r.PathValue("username"))
	switch {
	case errors.Is(err, directory.ErrNotFound) || err == nil && (u.Role != directory.RoleOperator || !a.allowed(r, u.Agency)):
		apiError(w, http.StatusNotFound, "no such operator")
		return u, false
	case err != nil:
		apiError(w, http.StatusServiceUnavailable, "directory unavailable")
		return u, false
	}
	return u, true
}

func (a *QueueAPI) getOperator(w http.ResponseWriter, r *http.Request) {
	u, ok := a.operator(w, r)
	if !ok {
		return
	}
	v, err := a.operatorView(r, u)
	answer(w, v, err)
}

func (a *QueueAPI) operatorView(r *http.Request, u directory.User) (OperatorView, error) {
	ops, err := a.Queues.Operators(r.Context(), u.Agency)
	if err != nil {
		return OperatorView{}, err
	}
	for _, o := range ops {
		if o.Username == u.Username {
			return viewOf(o), nil
		}
	}
	return OperatorView{Username: u.Username, Agency: u.Agency, State: LoggedOut}, nil
}

func (a *QueueAPI) putOperator(w http.ResponseWriter, r *http.Request) {
	u, ok := a.operator(w, r)
	if !ok {
		return
	}
	var body struct {
		State OperatorState `json:"state"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, "body: want {\"state\": \"available\" | \"paused\" | \"logged-out\"}")
		return
	}
	ctx := r.Context()
	var err error
	switch body.State {
	case Available:
		// Logging in an operator already in the queue ends a pause.
		err = a.Queues.Login(ctx, u.Agency, u.Username)
	case Paused:
		if err = a.Queues.Login(ctx, u.Agency, u.Username); err == nil {
			err = a.Queues.Pause(ctx, u.Username, true)
		}
	case LoggedOut:
		err = a.Queues.Logout(ctx, u.Username)
	default:
		apiError(w, http.StatusBadRequest, "state: want available, paused or logged-out")
		return
	}
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, "queue state unavailable")
		return
	}
	v, err := a.operatorView(r, u)
	answer(w, v, err)
}

// answer writes v, or 503 when the queue state could not be read.
func answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, "queue state unavailable")
		return
	}
	writeAPI(w, http.StatusOK, v)
}

func viewOf(o Operator) OperatorView {
	return OperatorView{Username: o.Username, Agency: o.Agency, State: o.State, IdleSince: o.IdleSince, Calls: o.Calls}
}

func writeAPI(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, msg string) {
	writeAPI(w, code, map[string]string{"error": msg})
}

// OperatorCollector exports the number of operators in each state per
// agency (centralino_queue_operators), read from the queue state at scrape.
type OperatorCollector struct {
	Dir    directory.Store
	Queues QueueState
}

var operatorsDesc = prometheus.NewDesc("centralino_queue_operators",
	"Operators logged in to each agency's queue, by state (available, busy, paused).", []string{"agency", "state"}, nil)

func (c OperatorCollector) Describe(ch chan<- *prometheus.Desc) { ch <- operatorsDesc }

func (c OperatorCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	agencies, err := c.Dir.Agencies(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(operatorsDesc, err)
		return
	}
	for _, ag := range agencies {
		if !hasQueue(ag) {
			continue
		}
		ops, err := c.Queues.Operators(ctx, ag.Code)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(operatorsDesc, err)
			return
		}
		counts := map[OperatorState]int{Available: 0, Busy: 0, Paused: 0}
		for _, o := range ops {
			counts[o.State]++
		}
		for state, n := range counts {
			ch <- prometheus.MustNewConstMetric(operatorsDesc, prometheus.GaugeValue, float64(n), ag.Code, string(state))
		}
	}
}

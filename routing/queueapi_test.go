package routing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestQueueAPI(t *testing.T) {
	r, q := newRouter(t)
	mux := http.NewServeMux()
	(&QueueAPI{Dir: r.Dir, Queues: q}).Register(mux)
	do := func(method, path, agency, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if agency != "" {
			req.Header.Set("X-Agency", agency)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		return w.Code, w.Body.String()
	}
	tests := []struct {
		name, method, path, agency, body string
		code                             int
		has                              string
	}{
		{"no agency named", "GET", "/api/queues", "", "", 401, "X-Agency header required"},
		{"an agency sees only its own", "GET", "/api/queues", "inps", "", 200, `"agency":"inps","strategy":"ring-all"`},
		{"another agency's queue is not found", "GET", "/api/queues/r_campan", "inps", "", 404, "no such agency"},
		{"an operator", "GET", "/api/operators/campania.op1", "r_campan", "", 200, `"state":"available"`},
		{"a desk phone is no operator", "GET", "/api/operators/campania.rossi", "r_campan", "", 404, "no such operator"},
		{"another agency's operator", "PUT", "/api/operators/campania.op1", "inps", `{"state":"paused"}`, 404, "no such operator"},
		{"pause", "PUT", "/api/operators/campania.op1", "r_campan", `{"state":"paused"}`, 200, `"state":"paused"`},
		{"unknown state", "PUT", "/api/operators/campania.op1", "r_campan", `{"state":"asleep"}`, 400, "state: want"},
		{"bad body", "PUT", "/api/operators/campania.op1", "r_campan", `state=paused`, 400, "body: want"},
		{"log out", "PUT", "/api/operators/campania.op2", "r_campan", `{"state":"logged-out"}`, 200, `"state":"logged-out"`},
		{"log in again", "PUT", "/api/operators/campania.op2", "r_campan", `{"state":"available"}`, 200, `"state":"available"`},
	}
	for _, tt := range tests {
		code, body := do(tt.method, tt.path, tt.agency, tt.body)
		if code != tt.code || !strings.Contains(body, tt.has) {
			t.Errorf("%s: %s %s: %d %s, want %d with %s", tt.name, tt.method, tt.path, code, body, tt.code, tt.has)
		}
	}
	if _, body := do("GET", "/api/queues", "inps", ""); strings.Contains(body, "r_campan") {
		t.Errorf("inps sees another agency's queue: %s", body)
	}
	ops, _ := q.Operators(context.Background(), "r_campan")
	if len(ops) != 3 || ops[0].State != Paused {
		t.Errorf("queue state after the API calls: %+v", ops)
	}
}

package main

import (
	"net/http"
	"net/url"
	"slices"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
	_ "github.com/lineamica/centralino/modules/survey"
)

// rateAlias serves /rate/{code}, the short link of the PEC receipt, by
// sending the citizen on to the survey's page, when the survey is enabled.
func rateAlias(mux *http.ServeMux, cfg *configs.Config) {
	if !slices.ContainsFunc(cfg.Modules, func(m modules.Config) bool { return m.Name == "survey" }) {
		return
	}
	mux.HandleFunc("GET /rate/{code}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/api/survey/rate/"+url.PathEscape(r.PathValue("code")), http.StatusFound)
	})
}

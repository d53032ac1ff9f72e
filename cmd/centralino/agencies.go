package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing/directory"
)

// directoryAgencies shows the modules the directory's agencies. A lookup
// that fails (Redis down) reports the agency unknown after a log line: a
// module degrades, it never waits long on the directory.
type directoryAgencies struct {
	store directory.Store
	log   *slog.Logger
}

const agencyLookupTimeout = 500 * time.Millisecond

func (d directoryAgencies) Agency(code string) (modules.Agency, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), agencyLookupTimeout)
	defer cancel()
	a, err := d.store.Agency(ctx, code)
	if err != nil {
		if !errors.Is(err, directory.ErrNotFound) {
			d.log.Warn("modules: agency lookup failed", "agency", code, "err", err)
		}
		return modules.Agency{}, false
	}
	return moduleAgency(a), true
}

func (d directoryAgencies) List() []modules.Agency {
	ctx, cancel := context.WithTimeout(context.Background(), agencyLookupTimeout)
	defer cancel()
	all, err := d.store.Agencies(ctx)
	if err != nil {
		d.log.Warn("modules: listing agencies failed", "err", err)
		return nil
	}
	out := make([]modules.Agency, len(all))
	for i, a := range all {
		out[i] = moduleAgency(a)
	}
	return out
}

func moduleAgency(a directory.Agency) modules.Agency {
	return modules.Agency{Code: a.Code, Name: a.Name, Region: a.Region, Sector: a.Sector}
}

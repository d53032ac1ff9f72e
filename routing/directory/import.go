package directory

import (
	"context"
	"fmt"
)

// Load upserts agencies, then users, into s: the import and demo-network path.
// It stops at the first error; what was written before it stays, and running
// Load again is safe since every write is an upsert.
func Load(ctx context.Context, s Store, agencies []Agency, users []User) error {
	for _, a := range agencies {
		if err := s.PutAgency(ctx, a); err != nil {
			return fmt.Errorf("directory: load agency %q: %w", a.Code, err)
		}
	}
	for _, u := range users {
		if err := s.PutUser(ctx, u); err != nil {
			return fmt.Errorf("directory: load user %q: %w", u.Username, err)
		}
	}
	return nil
}

package faq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/lineamica/centralino/modules"
)

// The module's keys in its KV. Every change bumps versionKey, which every
// node polls to know that its index is stale.
const (
	versionKey   = "version"
	serialKey    = "serial"  // numbers the entries given no id
	starterKey   = "starter" // set once the starter FAQ was loaded
	entriesIndex = "entries" // ids, by last change
)

func entryKey(id string) string   { return "entry:" + id }
func historyKey(id string) string { return "history:" + id }

// store keeps the entries in the module's KV: the shared truth that every
// node's index follows.
type store struct {
	kv         modules.KV
	maxHistory int
}

func (s *store) get(ctx context.Context, id string) (*Entry, error) {
	b, err := s.kv.Get(ctx, entryKey(id))
	if err != nil {
		return nil, err
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("entry %s: %w", id, err)
	}
	return &e, nil
}

// history returns the previous versions of an entry, newest first.
func (s *store) history(ctx context.Context, id string) ([]Entry, error) {
	b, err := s.kv.Get(ctx, historyKey(id))
	if errors.Is(err, modules.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h []Entry
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("history %s: %w", id, err)
	}
	return h, nil
}

// newID numbers an entry given no id.
func (s *store) newID(ctx context.Context) (string, error) {
	n, err := s.kv.Incr(ctx, serialKey)
	if err != nil {
		return "", err
	}
	return "faq-" + strconv.FormatInt(n, 10), nil
}

// put writes e, after pushing prev (if any) on the history, and returns the
// store's new version.
func (s *store) put(ctx context.Context, e *Entry, prev *Entry) (int64, error) {
	if prev != nil {
		h, err := s.history(ctx, e.ID)
		if err != nil {
			return 0, err
		}
		h = append([]Entry{*prev}, h...)
		if len(h) > s.maxHistory {
			h = h[:s.maxHistory]
		}
		if err := s.putJSON(ctx, historyKey(e.ID), h); err != nil {
			return 0, err
		}
	}
	if err := s.putJSON(ctx, entryKey(e.ID), e); err != nil {
		return 0, err
	}
	if err := s.kv.IndexAdd(ctx, entriesIndex, e.ID, float64(e.UpdatedAt.UnixMilli())); err != nil {
		return 0, err
	}
	return s.kv.Incr(ctx, versionKey)
}

// delete removes an entry and its history, and returns the store's new
// version.
func (s *store) delete(ctx context.Context, id string) (int64, error) {
	if err := s.kv.IndexRemove(ctx, entriesIndex, id); err != nil {
		return 0, err
	}
	for _, k := range []string{entryKey(id), historyKey(id)} {
		if err := s.kv.Delete(ctx, k); err != nil {
			return 0, err
		}
	}
	return s.kv.Incr(ctx, versionKey)
}

func (s *store) putJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.kv.Put(ctx, key, b, 0)
}

// version returns the store's version: 0 before any change.
func (s *store) version(ctx context.Context) (int64, error) {
	b, err := s.kv.Get(ctx, versionKey)
	if errors.Is(err, modules.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(b), 10, 64)
}

// all reads every entry. An entry listed but gone (deleted meanwhile) is
// skipped.
func (s *store) all(ctx context.Context) ([]*Entry, error) {
	ids, err := s.kv.IndexRange(ctx, entriesIndex, 0, 0, true)
	if err != nil {
		return nil, err
	}
	out := make([]*Entry, 0, len(ids))
	for _, id := range ids {
		e, err := s.get(ctx, id)
		if errors.Is(err, modules.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// starterLoaded says whether the starter FAQ was loaded once, or the store
// has entries of its own.
func (s *store) starterLoaded(ctx context.Context) (bool, error) {
	_, err := s.kv.Get(ctx, starterKey)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, modules.ErrNotFound) {
		return false, err
	}
	n, err := s.kv.IndexCount(ctx, entriesIndex)
	return n > 0, err
}

func (s *store) markStarterLoaded(ctx context.Context) error {
	return s.kv.Put(ctx, starterKey, []byte(time.Now().UTC().Format(time.RFC3339)), 0)
}

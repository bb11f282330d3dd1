package persistence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// maxResultsAttempts is how many times PutResults reads the stored document
// and writes conditionally when another writer changed the entry in between.
const maxResultsAttempts = 5

// ResultsVersion is the pair of results document fields that decides
// whether one document replaces another: its version and whether it is final.
type ResultsVersion struct {
	Version uint64 `json:"version"`
	Final   bool   `json:"final"`
}

// Replaces reports whether a document of version v may replace one of
// version current: v must have a higher version, and a final document is
// replaced only by a final one.
func (v ResultsVersion) Replaces(current ResultsVersion) bool {
	return v.Version > current.Version && (v.Final || !current.Final)
}

// ParseResultsVersion reads the "version" and "final" fields of a JSON
// results document. It returns an error wrapping ErrInvalidArgument for a
// document that is not a JSON object or whose version is 0 or missing.
func ParseResultsVersion(doc []byte) (ResultsVersion, error) {
	var v ResultsVersion
	err := json.Unmarshal(doc, &v)
	if err != nil {
		return ResultsVersion{}, fmt.Errorf("%w: results document is not a JSON object with a numeric "+
			"\"version\" and a boolean \"final\": %v", ErrInvalidArgument, err)
	}
	if v.Version == 0 {
		return ResultsVersion{}, fmt.Errorf("%w: results document has version 0 or none; versions start at 1",
			ErrInvalidArgument)
	}

	return v, nil
}

// PutResults stores doc, a JSON results document, as the results document
// of poll only if it replaces the stored one by ResultsVersion.Replaces. So
// versions never go back, whichever of several writers wins a race. It
// reads the stored entry and writes with the entry's revision as the
// expected last revision. When another writer changed the entry in
// between, it reads and decides again, at most maxResultsAttempts (5)
// times. A stored document without a readable version counts as version 0
// and not final.
//
// A doc that the stored one outranks is not written, and the error wraps
// ErrStaleResults and names both versions. A doc without a version of at
// least 1 wraps ErrInvalidArgument. When ctx has no deadline, PutResults
// gives up after DefaultTimeout.
func (s *Store) PutResults(ctx context.Context, poll string, doc []byte) error {
	err := ValidateKey(poll)
	if err != nil {
		return fmt.Errorf("put %s: %w", s.results.Bucket(), err)
	}

	next, err := ParseResultsVersion(doc)
	if err != nil {
		return fmt.Errorf("put results of poll %q: %w", poll, err)
	}

	ctx, cancel := withTimeout(ctx)
	defer cancel()

	for range maxResultsAttempts {
		err = s.putResultsOnce(ctx, poll, doc, next)
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
	}

	return fmt.Errorf("put results of poll %q version %d: another writer changed the entry %d times in a row; "+
		"retry later: %w", poll, next.Version, maxResultsAttempts, err)
}

// putResultsOnce reads the stored document of poll and writes doc if it
// replaces it, expecting the revision that it read. A write that finds
// another revision returns an error wrapping jetstream.ErrKeyExists or
// jetstream.ErrKeyRevisionMismatch.
func (s *Store) putResultsOnce(ctx context.Context, poll string, doc []byte, next ResultsVersion) error {
	entry, err := s.results.Get(ctx, poll)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		_, err = s.results.Create(ctx, poll, doc)
		if err != nil {
			return fmt.Errorf("create results of poll %q version %d: %w", poll, next.Version, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read results of poll %q: %w", poll, err)
	}

	current, err := ParseResultsVersion(entry.Value())
	if err != nil {
		s.log.Warn("stored results document unreadable; replacing it", "poll", poll, "revision", entry.Revision(),
			"err", err)
		current = ResultsVersion{}
	}
	if !next.Replaces(current) {
		return fmt.Errorf("%w: poll %q has version %d (final %t) stored, which version %d (final %t) "+
			"does not replace; continue from the stored version", ErrStaleResults, poll,
			current.Version, current.Final, next.Version, next.Final)
	}

	_, err = s.results.Update(ctx, poll, doc, entry.Revision())
	if err != nil {
		return fmt.Errorf("update results of poll %q from version %d to %d: %w", poll, current.Version, next.Version, err)
	}

	return nil
}

// GetResults returns the stored results document of poll, or an error
// wrapping ErrNotFound.
func (s *Store) GetResults(ctx context.Context, poll string) ([]byte, error) {
	return s.get(ctx, s.results, poll)
}

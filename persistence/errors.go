package persistence

import "errors"

// Sentinel errors of the package. Every returned error wraps at most one of
// them with the failing value, so callers test with errors.Is.
var (
	// ErrNotFound reports a missing catalog record or results document.
	ErrNotFound = errors.New("persistence: not found")

	// ErrExists reports a catalog key that CreateCatalog did not store
	// because the key already has a value.
	ErrExists = errors.New("persistence: key exists")

	// ErrConflict reports a catalog key that UpdateCatalog did not store
	// because its value changed since the revision the caller read.
	ErrConflict = errors.New("persistence: key changed since the revision read")

	// ErrStaleResults reports a results document that PutResults did not
	// store because the stored one is as new or newer.
	ErrStaleResults = errors.New("persistence: stale results document")

	// ErrNoSnapshot reports that a shard has no stored snapshot yet.
	ErrNoSnapshot = errors.New("persistence: no snapshot")

	// ErrShardMismatch reports a shard count that differs from the one stored
	// in the data directory.
	ErrShardMismatch = errors.New("persistence: shard count mismatch")

	// ErrClosed reports an append that the Store did not take because it
	// was closing or closed.
	ErrClosed = errors.New("persistence: store closed")

	// ErrCorruptBatch reports bytes that DecodeBatch or DecodeMessage cannot
	// read.
	ErrCorruptBatch = errors.New("persistence: corrupt vote batch")

	// ErrInvalidBatch reports a batch that EncodeBatch or AppendBatch rejects
	// before anything is written.
	ErrInvalidBatch = errors.New("persistence: invalid vote batch")

	// ErrBatchTooLarge reports an encoded batch above MaxBatchBytes.
	ErrBatchTooLarge = errors.New("persistence: vote batch too large")

	// ErrInvalidArgument reports a bad key, shard number, size or
	// configuration value.
	ErrInvalidArgument = errors.New("persistence: invalid argument")

	// ErrDataDir reports a data directory that cannot be created or written.
	ErrDataDir = errors.New("persistence: unusable data directory")

	// ErrLocked reports a data directory that another process has open.
	ErrLocked = errors.New("persistence: data directory locked")

	// ErrJetStreamDisabled reports a NATS server without JetStream.
	ErrJetStreamDisabled = errors.New("persistence: JetStream not enabled")

	// ErrCorruptRecord reports a stored ring or secret that cannot be read.
	ErrCorruptRecord = errors.New("persistence: corrupt stored record")
)

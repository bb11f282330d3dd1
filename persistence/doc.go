// Package persistence stores LiveVote's durable state in NATS JetStream.
//
// A Store owns one NATS connection and, unless Config.NatsURL names external
// servers, an embedded nats-server whose JetStream files live under
// Config.DataDir. It keeps five JetStream resources:
//
//   - stream LIVEVOTE_VOTES: vote batches on subject livevote.votes.log,
//     kept without an age or size limit. A group commit puts the batches
//     that wait while one publish is in flight into the next message, so
//     one fsync covers the batches of many shards. Every message has its
//     own Nats-Msg-Id (the batch id for a message of one batch), and a
//     publish whose ack is lost is retried with the same bytes and id, so
//     JetStream's 2 minute duplicate window stores it once. Messages on
//     livevote.votes.<shard>, one batch each, come from older releases and
//     replay the same way;
//   - KV bucket LIVEVOTE_RESULTS: the latest results document per poll,
//     written only when its version is higher than the stored one's;
//   - KV bucket LIVEVOTE_CATALOG: events, polls and other catalog records;
//   - KV bucket LIVEVOTE_SYSTEM: the shard ring (salt and shard count) and
//     named secrets, kept apart from the catalog so that listing the catalog
//     never returns a secret;
//   - object store LIVEVOTE_SNAPSHOTS: the latest state snapshot per shard
//     with the stream sequence it covers.
//
// With SyncAlways (the default) the embedded server fsyncs every write before
// it acknowledges it, so an acknowledged batch survives an OS crash or power
// loss of the machine, as far as the disk honours fsync. With SyncInterval
// JetStream fsyncs on its own timer
// (every 2 minutes in nats-server v2.15), so a process crash loses nothing
// but an OS crash or power loss can lose the batches acknowledged since the
// last fsync. In external mode the NATS servers' own sync settings decide.
//
// The embedded store directory is locked with flock(2) on <DataDir>/LOCK, so
// only one process at a time can open it.
package persistence

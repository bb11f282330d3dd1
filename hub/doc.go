// Package hub is the part of LiveVote between the wire and the shard actors.
//
// A vote that transport has decoded passes through the hub before it reaches
// a shard. The hub checks the voter's signed session ([Sessions]), the poll's
// state and the chosen options ([Registry.CheckVote]) and the voter's rate
// ([RateLimiter]). It then picks the shard that owns the voter with a
// consistent-hash [Ring] over the salted session id, so one shard actor holds
// every vote of a given voter and checks one-vote-per-voter without a lock.
//
// The [Registry] holds events and polls in memory and writes every change
// through to a [Catalog] before the change becomes visible, so a restarted
// process reads the same events, join codes, polls and poll states back with
// [Registry.Load]. Presenter tokens are stored only as SHA-256 hashes.
//
// The hub also fans out each merged results document to the sockets of its
// event: the document is encoded once and handed to every connection's
// bounded writer queue, and a broadcast never blocks on a slow socket.
//
// Every failure that reaches a client is an [*Error] with a [Code] from one
// table (errors.go), which also fixes the HTTP status of each code.
package hub

package actors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/livevote/livevote/persistence"
)

// seenVote is one vote id applied for a voter and the stream sequence of the
// batch that carried it first.
type seenVote struct {
	voteID string
	seq    uint64
}

// voterRecord is a voter's current choice in one poll and every vote id
// applied for them there, usually one.
//
// NOTE: seen grows by one entry per change of vote and is never trimmed, so
// the hub's per-voter rate limit is what bounds it.
type voterRecord struct {
	options []string
	seen    []seenVote
}

// seq returns the receipt sequence of voteID if it was applied for the voter.
func (r *voterRecord) seq(voteID string) (uint64, bool) {
	for _, s := range r.seen {
		if s.voteID == voteID {
			return s.seq, true
		}
	}

	return 0, false
}

// pollState is one shard's share of one poll. selections is the sum of
// counts. optionIDs holds one copy of each option id, shared by every voter
// record that selects it.
type pollState struct {
	closed     bool
	voters     map[string]*voterRecord
	counts     map[string]int64
	optionIDs  map[string]string
	selections int64
}

func newPollState() *pollState {
	return &pollState{
		voters:    make(map[string]*voterRecord),
		counts:    make(map[string]int64),
		optionIDs: make(map[string]string),
	}
}

// choice returns options without repeats, in first-seen order, as the poll's
// shared copies of the option ids.
func (p *pollState) choice(options []string) []string {
	out := make([]string, 0, len(options))
	for _, option := range options {
		if slices.Contains(out, option) {
			continue
		}
		out = append(out, p.intern(option))
	}

	return out
}

func (p *pollState) intern(option string) string {
	shared, ok := p.optionIDs[option]
	if ok {
		return shared
	}

	shared = strings.Clone(option)
	p.optionIDs[shared] = shared

	return shared
}

func (p *pollState) add(options []string, delta int64) {
	for _, option := range options {
		p.counts[option] += delta
	}
	p.selections += delta * int64(len(options))
}

func (p *pollState) totals() pollTotals {
	counts := make(map[string]int64, len(p.counts))
	for option, n := range p.counts {
		counts[option] = n
	}

	return pollTotals{
		Counts:     counts,
		TotalVotes: p.selections,
		Voters:     int64(len(p.voters)),
		Closed:     p.closed,
	}
}

// shardState is the vote state of one shard. Only the shard actor touches
// it, so it has no lock. It equals the vote stream of the shard up to lastSeq.
type shardState struct {
	polls   map[string]*pollState
	lastSeq uint64
	applied uint64 // votes that changed the state, live and replayed
}

func newShardState() *shardState {
	return &shardState{polls: make(map[string]*pollState)}
}

func (st *shardState) poll(id string) *pollState {
	p := st.polls[id]
	if p == nil {
		p = newPollState()
		st.polls[strings.Clone(id)] = p
	}

	return p
}

// receiptSeq returns the receipt sequence of (poll, voter, voteID) if that
// vote was applied.
func (st *shardState) receiptSeq(poll, voter, voteID string) (uint64, bool) {
	p := st.polls[poll]
	if p == nil {
		return 0, false
	}

	r := p.voters[voter]
	if r == nil {
		return 0, false
	}

	return r.seq(voteID)
}

func (st *shardState) hasVoter(poll, voter string) bool {
	p := st.polls[poll]

	return p != nil && p.voters[voter] != nil
}

func (st *shardState) isClosed(poll string) bool {
	p := st.polls[poll]

	return p != nil && p.closed
}

// markClosed closes poll and reports whether it was open.
func (st *shardState) markClosed(poll string) bool {
	p := st.poll(poll)
	if p.closed {
		return false
	}
	p.closed = true

	return true
}

// apply counts one vote carried by the stream message at seq. It is the only
// path that changes counts, used live and on replay, and it is idempotent per
// (poll, voter, voteID): a vote id applied before returns its first sequence
// and fresh false. A new vote id of a voter who has a vote replaces that
// vote's options. A repeated option counts once. The state keeps copies of the
// strings, so it never pins the buffer that a vote was decoded from.
func (st *shardState) apply(poll, voter, voteID string, options []string, seq uint64) (receiptSeq uint64, fresh bool) {
	p := st.poll(poll)
	r := p.voters[voter]

	if r == nil {
		r = &voterRecord{}
		p.voters[strings.Clone(voter)] = r
	} else {
		first, ok := r.seq(voteID)
		if ok {
			return first, false
		}
		p.add(r.options, -1)
	}

	r.options = p.choice(options)
	r.seen = append(r.seen, seenVote{voteID: strings.Clone(voteID), seq: seq})
	p.add(r.options, 1)
	st.applied++

	return seq, true
}

// advance records that the stream was applied up to seq.
func (st *shardState) advance(seq uint64) {
	if seq > st.lastSeq {
		st.lastSeq = seq
	}
}

// applyBatch applies every vote of the stream message at seq in order and
// returns how many changed the state.
func (st *shardState) applyBatch(seq uint64, b persistence.Batch) int {
	fresh := 0
	for _, v := range b.Votes {
		_, ok := st.apply(v.Poll, v.Voter, v.VoteID, v.Options, seq)
		if ok {
			fresh++
		}
	}
	st.advance(seq)

	return fresh
}

// allTotals copies the totals of every poll.
func (st *shardState) allTotals() map[string]pollTotals {
	out := make(map[string]pollTotals, len(st.polls))
	for id, p := range st.polls {
		out[id] = p.totals()
	}

	return out
}

// snapshotMagic starts every shard snapshot: "LVS" and the format version.
var snapshotMagic = [4]byte{'L', 'V', 'S', 1}

// errCorruptSnapshot reports snapshot bytes that decodeShardState cannot read.
var errCorruptSnapshot = errors.New("corrupt shard snapshot")

// encode writes the state in the snapshot format, version 1:
//
//	"LVS" 0x01, uvarint shard, uvarint lastSeq, uvarint applied, uvarint polls,
//	per poll: id, closed byte, uvarint voters,
//	per voter: id, uvarint options, options, uvarint seen, per seen: vote id, uvarint seq
//
// where each string is a uvarint byte length and the bytes. Counts are not
// stored: decode derives them from the voters' options.
func (st *shardState) encode(shard int) []byte {
	voters := 0
	for _, p := range st.polls {
		voters += len(p.voters)
	}

	out := make([]byte, 0, 64+voters*64)
	out = append(out, snapshotMagic[:]...)
	out = binary.AppendUvarint(out, uint64(shard))
	out = binary.AppendUvarint(out, st.lastSeq)
	out = binary.AppendUvarint(out, st.applied)
	out = binary.AppendUvarint(out, uint64(len(st.polls)))

	for id, p := range st.polls {
		out = appendString(out, id)
		out = appendBool(out, p.closed)
		out = binary.AppendUvarint(out, uint64(len(p.voters)))

		for voter, r := range p.voters {
			out = appendString(out, voter)
			out = appendStrings(out, r.options)
			out = binary.AppendUvarint(out, uint64(len(r.seen)))
			for _, s := range r.seen {
				out = appendString(out, s.voteID)
				out = binary.AppendUvarint(out, s.seq)
			}
		}
	}

	return out
}

func appendString(out []byte, s string) []byte {
	out = binary.AppendUvarint(out, uint64(len(s)))

	return append(out, s...)
}

func appendStrings(out []byte, list []string) []byte {
	out = binary.AppendUvarint(out, uint64(len(list)))
	for _, s := range list {
		out = appendString(out, s)
	}

	return out
}

func appendBool(out []byte, b bool) []byte {
	if b {
		return append(out, 1)
	}

	return append(out, 0)
}

// decodeShardState reads a snapshot written by encode for shard. It returns
// an error wrapping errCorruptSnapshot for another format version, another
// shard, truncated or trailing bytes and counts that exceed the input.
func decodeShardState(shard int, data []byte) (*shardState, error) {
	d := snapshotDecoder{data: string(data)}

	st, err := d.state(shard)
	if err != nil {
		return nil, fmt.Errorf("%w: shard %d: %v", errCorruptSnapshot, shard, err)
	}

	return st, nil
}

// snapshotDecoder reads the snapshot format from a string, so that decoded
// ids are substrings of one allocation. The first error sticks in err.
type snapshotDecoder struct {
	data string
	off  int
	err  error
}

func (d *snapshotDecoder) state(shard int) (*shardState, error) {
	if len(d.data) < len(snapshotMagic) || d.data[:len(snapshotMagic)] != string(snapshotMagic[:]) {
		return nil, fmt.Errorf("missing LVS version 1 header")
	}
	d.off = len(snapshotMagic)

	stored := d.uvarint()
	st := newShardState()
	st.lastSeq = d.uvarint()
	st.applied = d.uvarint()
	if d.err == nil && stored != uint64(shard) {
		return nil, fmt.Errorf("snapshot belongs to shard %d", stored)
	}

	polls := d.count()
	for i := 0; i < polls && d.err == nil; i++ {
		id := d.string()
		if st.polls[id] != nil {
			d.fail("poll %q repeated", id)
		}

		p := newPollState()
		p.closed = d.byte() == 1
		d.voters(p)
		st.polls[id] = p
	}

	if d.err == nil && d.off != len(d.data) {
		d.err = fmt.Errorf("%d trailing bytes", len(d.data)-d.off)
	}

	return st, d.err
}

func (d *snapshotDecoder) voters(p *pollState) {
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		voter := d.string()
		if p.voters[voter] != nil {
			d.fail("voter %q repeated", voter)
		}

		r := &voterRecord{options: make([]string, d.count())}
		for j := range r.options {
			r.options[j] = p.intern(d.string())
			if slices.Contains(r.options[:j], r.options[j]) {
				d.fail("option %q repeated for voter %q", r.options[j], voter)
			}
		}

		r.seen = make([]seenVote, d.count())
		for j := range r.seen {
			r.seen[j] = seenVote{voteID: d.string(), seq: d.uvarint()}
		}

		if d.err == nil {
			p.voters[voter] = r
			p.add(r.options, 1)
		}
	}
}

// fail records the first error.
func (d *snapshotDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

// uvarint reads one unsigned varint as binary.AppendUvarint writes it.
func (d *snapshotDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}

	start := d.off
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if d.off >= len(d.data) {
			break
		}

		b := d.data[d.off]
		d.off++
		if b < 0x80 {
			if shift == 63 && b > 1 {
				break
			}
			return v | uint64(b)<<shift
		}
		v |= uint64(b&0x7f) << shift
	}

	d.err = fmt.Errorf("invalid varint at byte %d", start)

	return 0
}

// count reads a length and checks that at least that many bytes remain, so a
// corrupt length cannot cause a huge allocation.
func (d *snapshotDecoder) count() int {
	v := d.uvarint()
	if d.err == nil && v > uint64(len(d.data)-d.off) {
		d.err = fmt.Errorf("length %d at byte %d exceeds the input", v, d.off)
	}
	if d.err != nil {
		return 0
	}

	return int(v)
}

func (d *snapshotDecoder) string() string {
	n := d.count()
	if d.err != nil {
		return ""
	}

	s := d.data[d.off : d.off+n]
	d.off += n
	if !utf8.ValidString(s) {
		d.err = fmt.Errorf("invalid UTF-8 at byte %d", d.off-n)
	}

	return s
}

func (d *snapshotDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.data) {
		d.err = fmt.Errorf("truncated at byte %d", d.off)
		return 0
	}

	b := d.data[d.off]
	d.off++

	return b
}

package actors

import (
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/anypb"
)

// Proto.Actor's remote layer carries only protobuf messages. In cluster mode
// the requests to shard and aggregator grains and their replies travel as
// google.protobuf.Any: the type URL names the message and the value is its
// JSON. Messages between actors of one process stay Go values.

// wirePrefix starts the type URL of every LiveVote message on the wire.
const wirePrefix = "type.livevote.dev/"

// errRemote wraps the error of a reply that crossed the wire, which keeps
// only its text.
var errRemote = errors.New("actors: error on a remote member")

type wireVote struct {
	Vote Vote  `json:"vote"`
	At   int64 `json:"at"`
}

type wireClose struct {
	Poll string `json:"poll"`
}

type wireCloseReply struct {
	Shard  int        `json:"shard"`
	Totals pollTotals `json:"totals"`
	Err    string     `json:"err,omitempty"`
}

type wireTotalsReply struct {
	Shard int                   `json:"shard"`
	Ready bool                  `json:"ready"`
	Polls map[string]pollTotals `json:"polls"`
	Fence uint64                `json:"fence"`
}

type wireFinalize struct {
	Poll   string       `json:"poll"`
	Totals []pollTotals `json:"totals"`
}

type wireFinalizeReply struct {
	Results Results `json:"results"`
	Event   string  `json:"event"`
	Err     string  `json:"err,omitempty"`
}

// aggregatorTouch activates the aggregator grain; it has no reply.
type aggregatorTouch struct{}

// toWire encodes message for a remote actor. It panics for a type that has
// no wire form, which is a programming error.
func toWire(message any) *anypb.Any {
	var (
		name string
		body any
	)
	switch m := message.(type) {
	case *voteRequest:
		name, body = "vote", wireVote{Vote: m.vote, At: m.at}
	case Ack:
		name, body = "ack", m
	case *closeRequest:
		name, body = "close", wireClose{Poll: m.poll}
	case *closeReply:
		name, body = "close_reply", wireCloseReply{Shard: m.shard, Totals: m.totals, Err: errText(m.err)}
	case *totalsRequest:
		name, body = "totals", struct{}{}
	case *totalsReply:
		name, body = "totals_reply", wireTotalsReply{Shard: m.shard, Ready: m.ready, Polls: m.polls, Fence: m.fence}
	case *finalizeRequest:
		name, body = "finalize", wireFinalize{Poll: m.poll, Totals: m.totals}
	case *finalizeReply:
		name, body = "finalize_reply", wireFinalizeReply{Results: m.results, Event: m.results.Event, Err: errText(m.err)}
	case *aggregatorTouch:
		name, body = "touch", struct{}{}
	default:
		panic(fmt.Sprintf("actors: no wire form for %T", message))
	}

	value, err := json.Marshal(body)
	if err != nil {
		panic(fmt.Sprintf("actors: encode %T for the wire: %v", message, err))
	}

	return &anypb.Any{TypeUrl: wirePrefix + name, Value: value}
}

func errText(err error) string {
	if err == nil {
		return ""
	}

	return err.Error()
}

func remoteErr(text string) error {
	if text == "" {
		return nil
	}

	return fmt.Errorf("%w: %s", errRemote, text)
}

// fromWire decodes a message that toWire encoded.
func fromWire(m *anypb.Any) (any, error) {
	name := m.TypeUrl
	if len(name) <= len(wirePrefix) || name[:len(wirePrefix)] != wirePrefix {
		return nil, fmt.Errorf("actors: unknown wire type %q", m.TypeUrl)
	}
	name = name[len(wirePrefix):]

	decode := func(v any) error {
		err := json.Unmarshal(m.Value, v)
		if err != nil {
			return fmt.Errorf("actors: decode wire message %q: %w", name, err)
		}
		return nil
	}

	switch name {
	case "vote":
		var w wireVote
		err := decode(&w)
		return &voteRequest{vote: w.Vote, at: w.At}, err
	case "ack":
		var a Ack
		err := decode(&a)
		return a, err
	case "close":
		var w wireClose
		err := decode(&w)
		return &closeRequest{poll: w.Poll}, err
	case "close_reply":
		var w wireCloseReply
		err := decode(&w)
		return &closeReply{shard: w.Shard, totals: w.Totals, err: remoteErr(w.Err)}, err
	case "totals":
		return &totalsRequest{}, nil
	case "totals_reply":
		var w wireTotalsReply
		err := decode(&w)
		return &totalsReply{shard: w.Shard, ready: w.Ready, polls: w.Polls, fence: w.Fence}, err
	case "finalize":
		var w wireFinalize
		err := decode(&w)
		return &finalizeRequest{poll: w.Poll, totals: w.Totals}, err
	case "finalize_reply":
		var w wireFinalizeReply
		err := decode(&w)
		w.Results.Event = w.Event
		return &finalizeReply{results: w.Results, err: remoteErr(w.Err)}, err
	case "touch":
		return &aggregatorTouch{}, nil
	default:
		return nil, fmt.Errorf("actors: unknown wire type %q", m.TypeUrl)
	}
}

package transport

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/livevote/livevote/hub"
)

func TestDecodeClientMessage(t *testing.T) {
	t.Parallel()
	const id = "0b7d5d0e-8f43-4bd4-a3c4-7c9d1f0e2a11"
	cases := []struct {
		name  string
		frame string
		code  hub.Code // empty means the frame is valid
	}{
		{"valid single", `{"type":"vote","vote_id":"` + id + `","poll":"p1","options":["o1"]}`, ""},
		{"valid multiple", `{"type":"vote","vote_id":"` + id + `","poll":"p1","options":["o1","o3"]}`, ""},
		{"empty", ``, hub.CodeInvalidMessage},
		{"not an object", `[1,2]`, hub.CodeInvalidMessage},
		{"truncated", `{"type":"vote"`, hub.CodeInvalidMessage},
		{"missing type", `{"vote_id":"` + id + `","poll":"p1","options":["o1"]}`, hub.CodeInvalidMessage},
		{"unknown type", `{"type":"hello"}`, hub.CodeInvalidMessage},
		{"unknown field", `{"type":"vote","vote_id":"` + id + `","poll":"p1","options":["o1"],"x":1}`, hub.CodeInvalidMessage},
		{"missing poll", `{"type":"vote","vote_id":"` + id + `","options":["o1"]}`, hub.CodeInvalidMessage},
		{"missing vote id", `{"type":"vote","poll":"p1","options":["o1"]}`, hub.CodeInvalidMessage},
		{"empty options", `{"type":"vote","vote_id":"` + id + `","poll":"p1","options":[]}`, hub.CodeInvalidMessage},
		{"options not array", `{"type":"vote","vote_id":"` + id + `","poll":"p1","options":"o1"}`, hub.CodeInvalidMessage},
		{"option not string", `{"type":"vote","vote_id":"` + id + `","poll":"p1","options":[1]}`, hub.CodeInvalidMessage},
		{"too many options", `{"type":"vote","vote_id":"` + id + `","poll":"p1","options":["` + strings.Repeat(`o1","`, 11) + `o1"]}`, hub.CodeInvalidMessage},
		{"trailing data", `{"type":"vote","vote_id":"` + id + `","poll":"p1","options":["o1"]} {}`, hub.CodeInvalidMessage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			msg, err := decodeClientMessage([]byte(tc.frame))
			if tc.code == "" {
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if msg.Type != "vote" || msg.VoteID != id || msg.Poll != "p1" {
					t.Fatalf("decoded %+v", msg)
				}
				return
			}
			if err == nil {
				t.Fatalf("decoded %+v, want error %s", msg, tc.code)
			}
			if err.Code != tc.code {
				t.Fatalf("code %s, want %s (%s)", err.Code, tc.code, err.Message)
			}
			if err.Message == "" {
				t.Fatal("error without a message")
			}
		})
	}
}

// FuzzDecodeClientMessage checks that no input panics the decoder and that every
// refusal carries a code and a valid UTF-8 message.
func FuzzDecodeClientMessage(f *testing.F) {
	f.Add([]byte(`{"type":"vote","vote_id":"0b7d5d0e-8f43-4bd4-a3c4-7c9d1f0e2a11","poll":"p1","options":["o1"]}`))
	f.Add([]byte(`{"type":"vote","options":[null]}`))
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := decodeClientMessage(data)
		if err != nil {
			if err.Code == "" || !utf8.ValidString(err.Message) {
				t.Fatalf("refusal without code or with invalid message: %+v", err)
			}
			return
		}
		if msg.Type != "vote" || msg.Poll == "" || msg.VoteID == "" || len(msg.Options) == 0 || len(msg.Options) > MaxVoteOptions {
			t.Fatalf("accepted an incomplete message: %+v", msg)
		}
	})
}

// FuzzDecodeVoteBody checks that no HTTP vote body panics the decoder, and that
// every accepted body carries a vote id and 1 to MaxVoteOptions options.
func FuzzDecodeVoteBody(f *testing.F) {
	f.Add([]byte(`{"vote_id":"0b7d5d0e-8f43-4bd4-a3c4-7c9d1f0e2a11","options":["o1"]}`))
	f.Add([]byte(`{"vote_id":"","options":null}`))
	f.Add([]byte(`{"options":["o1","o2"],"vote_id":"x"} `))
	f.Fuzz(func(t *testing.T, data []byte) {
		var body voteBody
		if err := decodeStrict(bytes.NewReader(data), &body); err != nil {
			if err.Code == "" || !utf8.ValidString(err.Message) {
				t.Fatalf("refusal without code or with invalid message: %+v", err)
			}
			return
		}
		if err := checkVoteShape(body.VoteID, body.Options); err != nil {
			return
		}
		if body.VoteID == "" || len(body.Options) == 0 || len(body.Options) > MaxVoteOptions {
			t.Fatalf("accepted an incomplete body: %+v", body)
		}
	})
}

package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/livevote/livevote/hub"
)

// MaxVoteOptions bounds the options array of one vote; polls have at most 10 options.
const MaxVoteOptions = hub.MaxPollOptions

// clientMessage is a WebSocket message from a client. Only "vote" exists in version 1.
type clientMessage struct {
	Type    string   `json:"type"`
	VoteID  string   `json:"vote_id"`
	Poll    string   `json:"poll"`
	Options []string `json:"options"`
}

// decodeClientMessage parses one WebSocket text message strictly: unknown fields, trailing
// data and wrong types are refused with invalid_message naming the problem.
func decodeClientMessage(data []byte) (clientMessage, *hub.Error) {
	var msg clientMessage
	if err := decodeStrict(bytes.NewReader(data), &msg); err != nil {
		return clientMessage{}, err
	}
	switch msg.Type {
	case "vote":
	case "":
		return clientMessage{}, hub.Errorf(hub.CodeInvalidMessage, `field "type" is missing: send {"type":"vote",...}`)
	default:
		return clientMessage{}, hub.Errorf(hub.CodeInvalidMessage, "message type %q is unknown: the only client message is \"vote\"", truncateValue(msg.Type))
	}
	if msg.Poll == "" {
		return clientMessage{}, hub.Errorf(hub.CodeInvalidMessage, `field "poll" is missing: name the poll id`)
	}
	if err := checkVoteShape(msg.VoteID, msg.Options); err != nil {
		return clientMessage{}, err
	}
	return msg, nil
}

// checkVoteShape checks what a vote must carry before the hub looks at it.
func checkVoteShape(voteID string, options []string) *hub.Error {
	if voteID == "" {
		return hub.Errorf(hub.CodeInvalidMessage, `field "vote_id" is missing: send a UUID and reuse it when you retry`)
	}
	if len(options) == 0 {
		return hub.Errorf(hub.CodeInvalidMessage, `field "options" is missing or empty: send at least one option id`)
	}
	if len(options) > MaxVoteOptions {
		return hub.Errorf(hub.CodeInvalidMessage, "a vote names %d options; a poll has at most %d", len(options), MaxVoteOptions)
	}
	return nil
}

// decodeBody reads a JSON request body of at most limit bytes into v. It requires a JSON
// content type, so a plain HTML form cannot post votes cross-site.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) *hub.Error {
	if err := requireJSON(r); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	return decodeStrict(r.Body, v)
}

func requireJSON(r *http.Request) *hub.Error {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/json" {
		return hub.Errorf(hub.CodeInvalidMessage, "Content-Type %q is not supported: send application/json", truncateValue(r.Header.Get("Content-Type")))
	}
	return nil
}

// requireEmptyOrJSON accepts a request without a body, or with a JSON one.
func requireEmptyOrJSON(r *http.Request) *hub.Error {
	if r.ContentLength == 0 && r.Header.Get("Content-Type") == "" {
		return nil
	}
	return requireJSON(r)
}

func decodeStrict(body io.Reader, v any) *hub.Error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return decodeError(err)
		}
		return hub.Errorf(hub.CodeInvalidMessage, "unexpected data after the JSON object: send one object per message")
	}
	return nil
}

func decodeError(err error) *hub.Error {
	var (
		tooLarge  *http.MaxBytesError
		syntax    *json.SyntaxError
		typeError *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return hub.Errorf(hub.CodeTooLarge, "body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, io.EOF):
		return hub.Errorf(hub.CodeInvalidMessage, "body is empty: send a JSON object")
	case errors.As(err, &syntax):
		return hub.Errorf(hub.CodeInvalidMessage, "malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typeError):
		return hub.Errorf(hub.CodeInvalidMessage, "field %q must be %s, not %s", typeError.Field, jsonKind(typeError.Type.String()), typeError.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return hub.Errorf(hub.CodeInvalidMessage, "%s is not part of the message: remove it", strings.TrimPrefix(err.Error(), "json: "))
	default:
		return hub.Errorf(hub.CodeInvalidMessage, "malformed JSON: %v", err)
	}
}

func jsonKind(goType string) string {
	switch {
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case goType == "bool":
		return "true or false"
	default:
		return fmt.Sprintf("a JSON value of type %s", goType)
	}
}

func truncateValue(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

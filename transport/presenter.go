package transport

import (
	"bytes"
	"context"

	"github.com/coder/websocket"

	"github.com/livevote/livevote/hub"
)

// authMessage is the first message of a presenter socket. It carries the presenter
// token in the message body, so the token never appears in a URL that proxies or
// access logs record.
type authMessage struct {
	Type  string `json:"type"`
	Token string `json:"token"`
}

// parseRole reads the role query parameter of /ws: empty or "audience" for voters,
// "presenter" for sockets that authenticate with the presenter token.
func parseRole(value string) (hub.Role, *hub.Error) {
	switch value {
	case "", "audience":
		return hub.RoleAudience, nil
	case "presenter":
		return hub.RolePresenter, nil
	default:
		return hub.RoleAudience, hub.Errorf(hub.CodeInvalidMessage, "role %q is unknown: use role=presenter or leave it out", truncateValue(value))
	}
}

// decodeAuthMessage parses {"type":"auth","token":"..."} strictly and returns the token.
func decodeAuthMessage(typ websocket.MessageType, data []byte) (string, *hub.Error) {
	if typ != websocket.MessageText {
		return "", hub.Errorf(hub.CodeInvalidMessage, `binary messages are not supported: send {"type":"auth","token":"..."} as JSON text`)
	}

	var msg authMessage
	if err := decodeStrict(bytes.NewReader(data), &msg); err != nil {
		return "", err
	}
	if msg.Type != "auth" {
		return "", hub.Errorf(hub.CodeUnauthorized, `the first message of a presenter socket must be {"type":"auth","token":"..."}, not type %q`, truncateValue(msg.Type))
	}
	if msg.Token == "" {
		return "", hub.Errorf(hub.CodeUnauthorized, `field "token" is missing: send the presenter token returned when the event was created`)
	}
	return msg.Token, nil
}

// authenticate reads the first message of a presenter socket, which must carry the
// event's presenter token, within AuthTimeout. On success it returns true; otherwise
// it sends an error message with its code and closes the socket with 1008.
func (c *conn) authenticate(ctx context.Context, eventID string) bool {
	readCtx, cancel := context.WithTimeout(ctx, c.srv.cfg.AuthTimeout)
	defer cancel()

	typ, data, err := c.ws.Read(readCtx)
	if err != nil {
		c.srv.logger.Info("presenter socket sent no auth message", "event", eventID, "error", err)
		c.shut(websocket.StatusPolicyViolation, "presenter token required")
		return false
	}

	token, refused := decodeAuthMessage(typ, data)
	if refused == nil {
		refused = hub.AsError(c.srv.hub.Registry().Authorize(eventID, token))
	}
	if refused != nil {
		c.srv.logger.Info("presenter socket refused", "event", eventID, "code", refused.Code)
		c.enqueueJSON(errorMessage{Type: "error", Error: refused})
		c.shut(websocket.StatusPolicyViolation, "presenter token missing or invalid")
		return false
	}
	return true
}

package actors

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestDemotingHandlerLowersPeerLoss checks that Proto.Actor's error for a
// lost peer connection is logged as a warning, that other errors stay
// errors, and that a demoted record obeys the logger's level.
func TestDemotingHandlerLowersPeerLoss(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(demotingHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})}).With("component", "protoactor")

	logger.Error("EndpointWriter lost connection", "address", "127.0.0.1:8092")
	logger.Error("some other failure")
	out := buf.String()
	if !strings.Contains(out, `level=WARN msg="EndpointWriter lost connection"`) || !strings.Contains(out, "component=protoactor") {
		t.Errorf("peer loss not logged as a warning with its attributes:\n%s", out)
	}
	if !strings.Contains(out, `level=ERROR msg="some other failure"`) {
		t.Errorf("another error was not kept as an error:\n%s", out)
	}

	buf.Reset()
	quiet := slog.New(demotingHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})})
	quiet.Error("EndpointWriter lost connection")
	if buf.Len() != 0 {
		t.Errorf("a demoted record passed a logger set to errors only: %q", buf.String())
	}
}

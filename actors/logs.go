package actors

import (
	"context"
	"log/slog"
)

// demotedErrors names Proto.Actor error messages that a cluster member logs
// whenever another member stops or crashes. The membership decides what such
// a loss means and logs that itself, so these are logged as warnings: an
// operator who alerts on errors is not paged for a planned stop.
var demotedErrors = map[string]bool{
	"EndpointWriter lost connection": true,
}

// demotingHandler passes Proto.Actor's records on to its Handler, with the
// errors of demotedErrors lowered to warnings.
type demotingHandler struct{ slog.Handler }

func (d demotingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelError && demotedErrors[r.Message] {
		r.Level = slog.LevelWarn
		if !d.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}

	return d.Handler.Handle(ctx, r)
}

func (d demotingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return demotingHandler{d.Handler.WithAttrs(attrs)}
}

func (d demotingHandler) WithGroup(name string) slog.Handler {
	return demotingHandler{d.Handler.WithGroup(name)}
}

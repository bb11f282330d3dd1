// Package static contains LiveVote's web pages: plain HTML, CSS and JavaScript
// modules that run on a phone without a build step, embedded in the binary.
//
// The server maps URL paths to the files of [Files] like this:
//
//	GET /                  Index      join form and "create an event"
//	GET /e/{code}          Audience   the event's polls for voters
//	GET /present/{code}    Presenter  poll management and the live chart
//	GET /dashboard         Dashboard  the operator's live figures
//	GET /static/{name}     name       every other file (CSS, JavaScript, icon)
//
// The pages reference their assets by absolute paths under [AssetPrefix] and
// read the join code from location.pathname, so the page files are served
// unchanged for every code. The pages load no external resource and contain
// no inline script, style or event handler, so a Content-Security-Policy of
// "default-src 'self'" allows them.
package static

import "embed"

// Files contains the pages and their assets at the root of the file system,
// for example "index.html", "app.css" and "audience.js".
//
//go:embed *.html *.css *.js *.svg
var Files embed.FS

// Names of the page files in [Files].
const (
	// Index is the entry page served at "/".
	Index = "index.html"

	// Audience is the voting page served at "/e/{code}".
	Audience = "audience.html"

	// Presenter is the presenter page served at "/present/{code}".
	Presenter = "presenter.html"

	// Dashboard is the operator page served at "/dashboard".
	Dashboard = "dashboard.html"
)

// AssetPrefix is the URL path under which the server serves every file of
// [Files] by its name, for example "/static/app.css" for "app.css".
const AssetPrefix = "/static/"

package transport

import (
	"io/fs"
	"net/http"
)

// Page files in the static file system, and the paths that serve them.
const (
	pageIndex     = "index.html"
	pageAudience  = "audience.html"
	pagePresenter = "presenter.html"
	pageDashboard = "dashboard.html"
)

// contentSecurityPolicy allows only the server's own scripts, styles and sockets.
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

func (s *Server) pageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.page(pageIndex))
	mux.HandleFunc("GET /e/{code}", s.page(pageAudience))
	mux.HandleFunc("GET /present/{code}", s.page(pagePresenter))
	mux.HandleFunc("GET /dashboard", s.page(pageDashboard))

	assets := http.FileServerFS(s.cfg.Static)
	mux.Handle("GET /static/", http.StripPrefix("/static/", withPageHeaders(assets)))
}

// page serves one embedded HTML file. The join code in the path is read by the page's
// script, so an unknown code still gets the page, which then explains the error.
func (s *Server) page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := fs.ReadFile(s.cfg.Static, name)
		if err != nil {
			s.logger.Error("page missing from the embedded files", "page", name, "error", err)
			http.Error(w, "page not found", http.StatusNotFound)
			return
		}
		setPageHeaders(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(body)
	}
}

func withPageHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		next.ServeHTTP(w, r)
	})
}

func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

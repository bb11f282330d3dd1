package transport

import (
	"fmt"
	"net/http"
	"strings"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/livevote/livevote/hub"
)

// maxQRHostLength bounds the Host header that goes into a join QR code, in bytes.
const maxQRHostLength = 255

// getJoinQR serves GET /api/events/{code}/qr.svg: a QR code of the audience link
// http(s)://HOST/e/CODE, where HOST is the host the request was sent to, so the code
// works for whatever address the presenter's browser reached (a LAN IP, a DNS name).
// The SVG scales to any size without blur, for a projector.
func (s *Server) getJoinQR(w http.ResponseWriter, r *http.Request) {
	ev, err := s.hub.Registry().EventByCode(r.PathValue("code"))
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	if !validHost(r.Host) {
		writeError(w, hub.Errorf(hub.CodeInvalidMessage, "Host header %q cannot go into a link: send a host name or address with an optional port", truncateValue(r.Host)))
		return
	}

	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	link := scheme + "://" + r.Host + "/e/" + ev.Code
	svg, err := qrSVG(link)
	if err != nil {
		s.logger.Error("qr encoding failed", "event", ev.ID, "error", err)
		writeError(w, hub.Errorf(hub.CodeInvalidMessage, "link %q does not fit in a QR code", truncateValue(link)))
		return
	}

	h := w.Header()
	h.Set("Content-Type", "image/svg+xml")
	h.Set("Cache-Control", "no-cache")
	h.Set("Vary", "Host")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'")
	_, _ = w.Write([]byte(svg))
}

// validHost reports whether host is a host name, IPv4 or bracketed IPv6 address,
// with an optional port: letters, digits and ".-:[]" only.
func validHost(host string) bool {
	if host == "" || len(host) > maxQRHostLength {
		return false
	}
	for _, c := range host {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)
		if !ok {
			return false
		}
	}
	return true
}

// qrSVG returns an SVG image of content as a QR code with error correction level M
// (15% of the code may be damaged) and a four-module quiet zone. Each dark module is
// one unit square of a single path, drawn black on white whatever the page's colour
// scheme, because phone cameras need the contrast.
func qrSVG(content string) (string, error) {
	code, err := qrcode.New(content, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("transport: encode QR code: %w", err)
	}
	bitmap := code.Bitmap()
	size := len(bitmap)

	var path strings.Builder
	for y, row := range bitmap {
		for x, dark := range row {
			if dark {
				fmt.Fprintf(&path, "M%d %dh1v1h-1z", x, y)
			}
		}
	}

	var out strings.Builder
	fmt.Fprintf(&out, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges" role="img">`, size, size)
	fmt.Fprintf(&out, `<title>QR code of %s</title>`, xmlEscape(content))
	fmt.Fprintf(&out, `<rect width="%d" height="%d" fill="#fff"/>`, size, size)
	fmt.Fprintf(&out, `<path fill="#000" d="%s"/></svg>`, path.String())
	return out.String(), nil
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

package static

import (
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	// scriptElement matches a script element with its attributes and body.
	scriptElement = regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script\s*>`)

	// urlAttribute matches attributes that load or link a resource.
	urlAttribute = regexp.MustCompile(`(?i)\s(src|href|action|formaction|poster|srcset|data)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)`)

	// eventHandlerAttribute matches inline handlers such as onclick=.
	eventHandlerAttribute = regexp.MustCompile(`(?i)<[^>]*\son[a-z]+\s*=`)

	// styleAttribute matches inline style attributes.
	styleAttribute = regexp.MustCompile(`(?i)<[^>]*\sstyle\s*=`)

	// styleElement matches an inline <style> element.
	styleElement = regexp.MustCompile(`(?i)<style\b`)

	// absoluteURL matches a URL with a network scheme or a
	// protocol-relative URL anywhere in a file.
	absoluteURL = regexp.MustCompile(`(?i)(?:\b(?:https?|wss?|ftp):)?//[a-z0-9][a-z0-9.-]*\.[a-z]{2,}[^\s"'<>)]*|\b(?:https?|wss?|ftp)://[^\s"'<>)]+`)

	// moduleImport matches static and dynamic ES module specifiers.
	moduleImport = regexp.MustCompile(`(?m)(?:^\s*import\s[^;]*?\sfrom\s*|^\s*import\s*|\bimport\s*\(\s*)["']([^"']+)["']`)

	// cssReference matches url(...) and @import references in CSS.
	cssReference = regexp.MustCompile(`(?i)url\(\s*["']?([^"')]+)["']?\s*\)|@import\s+["']([^"']+)["']`)
)

// xmlNamespaces are URLs that name an XML namespace. Browsers never fetch
// them, and SVG needs them.
var xmlNamespaces = []string{
	"http://www.w3.org/2000/svg",
	"http://www.w3.org/1999/xlink",
}

// pageProblems returns what keeps an HTML page from being served from the
// binary under "default-src 'self'": inline code or styles, external
// URLs, and /static/ references that have no file in fsys.
func pageProblems(fsys fs.FS, name, html string) []string {
	var problems []string
	for _, match := range scriptElement.FindAllStringSubmatch(html, -1) {
		if strings.TrimSpace(match[2]) != "" {
			problems = append(problems, name+": inline script body: "+abbreviate(match[2]))
		}
		if !strings.Contains(strings.ToLower(match[1]), "src=") {
			problems = append(problems, name+": script element without src: <script"+match[1]+">")
		}
	}
	if eventHandlerAttribute.MatchString(html) {
		problems = append(problems, name+": inline event handler: "+abbreviate(eventHandlerAttribute.FindString(html)))
	}
	if styleAttribute.MatchString(html) {
		problems = append(problems, name+": inline style attribute: "+abbreviate(styleAttribute.FindString(html)))
	}
	if styleElement.MatchString(html) {
		problems = append(problems, name+": inline <style> element")
	}

	for _, match := range urlAttribute.FindAllStringSubmatch(html, -1) {
		ref := strings.Trim(match[2], `"'`)
		if problem := referenceProblem(fsys, ref); problem != "" {
			problems = append(problems, name+": "+match[1]+"="+ref+": "+problem)
		}
	}
	return append(problems, externalURLProblems(name, html)...)
}

// referenceProblem checks one URL from a page. Assets must be under
// AssetPrefix and exist in fsys. Other local links must be absolute paths
// or fragments.
func referenceProblem(fsys fs.FS, ref string) string {
	switch {
	case ref == "":
		return "empty URL"
	case strings.HasPrefix(ref, "#"):
		return ""
	case strings.HasPrefix(ref, "//") || strings.Contains(ref, ":"):
		return "URL is not on this server; serve the resource from the binary"
	case strings.HasPrefix(ref, AssetPrefix):
		asset := strings.TrimPrefix(ref, AssetPrefix)
		if _, err := fs.Stat(fsys, asset); err != nil {
			return "no file " + asset + " in the embedded files"
		}
		return ""
	case strings.HasPrefix(ref, "/"):
		return ""
	default:
		return "relative URL breaks on /e/{code} and /present/{code}; use " + AssetPrefix + "name"
	}
}

// scriptProblems returns module imports of a JavaScript file that name no
// embedded file, and external URLs in it.
func scriptProblems(fsys fs.FS, name, source string) []string {
	var problems []string
	for _, match := range moduleImport.FindAllStringSubmatch(source, -1) {
		specifier := match[1]
		if !strings.HasPrefix(specifier, "./") && !strings.HasPrefix(specifier, "../") {
			problems = append(problems, name+": import "+specifier+": not a relative path to an embedded module")
			continue
		}
		target := path.Join(path.Dir(name), specifier)
		if _, err := fs.Stat(fsys, target); err != nil {
			problems = append(problems, name+": import "+specifier+": no file "+target+" in the embedded files")
		}
	}
	return append(problems, externalURLProblems(name, source)...)
}

// styleProblems returns url() and @import references of a CSS file that
// are external or name no embedded file.
func styleProblems(fsys fs.FS, name, source string) []string {
	var problems []string
	for _, match := range cssReference.FindAllStringSubmatch(source, -1) {
		ref := match[1] + match[2]
		if strings.Contains(ref, ":") || strings.HasPrefix(ref, "/") {
			problems = append(problems, name+": "+ref+": CSS references must be relative paths to embedded files")
			continue
		}
		if _, err := fs.Stat(fsys, path.Join(path.Dir(name), ref)); err != nil {
			problems = append(problems, name+": "+ref+": no such file in the embedded files")
		}
	}
	return append(problems, externalURLProblems(name, source)...)
}

// fileProblems runs the check that fits the file's extension.
func fileProblems(fsys fs.FS, name, source string) []string {
	switch path.Ext(name) {
	case ".html":
		return pageProblems(fsys, name, source)
	case ".js":
		return scriptProblems(fsys, name, source)
	case ".css":
		return styleProblems(fsys, name, source)
	default:
		return externalURLProblems(name, source)
	}
}

func externalURLProblems(name, source string) []string {
	var problems []string
	for _, url := range absoluteURL.FindAllString(source, -1) {
		if !slices.Contains(xmlNamespaces, url) {
			problems = append(problems, name+": external URL "+url)
		}
	}
	return problems
}

func abbreviate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := fs.ReadFile(Files, name)
	if err != nil {
		t.Fatalf("read %s from the embedded files: %v", name, err)
	}
	return string(data)
}

func embeddedNames(t *testing.T) []string {
	t.Helper()
	var names []string
	err := fs.WalkDir(Files, ".", func(name string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !entry.IsDir() {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk the embedded files: %v", err)
	}
	return names
}

func TestPagesEmbedded(t *testing.T) {
	t.Parallel()

	for _, page := range []string{Index, Audience, Presenter, Dashboard} {
		html := readFile(t, page)
		if !strings.Contains(html, `name="viewport"`) {
			t.Errorf("%s has no viewport meta element, so phones render it at desktop width", page)
		}
		if !strings.Contains(html, `<html lang="en">`) {
			t.Errorf("%s does not declare its language", page)
		}
		if !strings.Contains(html, `href="`+AssetPrefix+`app.css"`) {
			t.Errorf("%s does not link %sapp.css", page, AssetPrefix)
		}
		if !scriptElement.MatchString(html) {
			t.Errorf("%s loads no script", page)
		}
	}
}

func TestPagesReferenceOnlyEmbeddedFiles(t *testing.T) {
	t.Parallel()

	for _, page := range []string{Index, Audience, Presenter, Dashboard} {
		for _, problem := range fileProblems(Files, page, readFile(t, page)) {
			t.Error(problem)
		}
	}
}

func TestAssetsReferenceOnlyEmbeddedFiles(t *testing.T) {
	t.Parallel()

	for _, name := range embeddedNames(t) {
		if path.Ext(name) == ".html" {
			continue
		}
		for _, problem := range fileProblems(Files, name, readFile(t, name)) {
			t.Error(problem)
		}
	}
}

// TestEveryFileIsUsed fails on an embedded file that no page loads,
// directly or through module imports, so stale files do not ship.
func TestEveryFileIsUsed(t *testing.T) {
	t.Parallel()

	used := map[string]bool{Index: true, Audience: true, Presenter: true, Dashboard: true}
	queue := []string{Index, Audience, Presenter, Dashboard}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		for _, ref := range referencedFiles(name, readFile(t, name)) {
			// A missing file is reported by the reference tests.
			if _, err := fs.Stat(Files, ref); err != nil {
				continue
			}
			if !used[ref] {
				used[ref] = true
				queue = append(queue, ref)
			}
		}
	}

	for _, name := range embeddedNames(t) {
		if !used[name] {
			t.Errorf("%s is embedded but no page loads it", name)
		}
	}
}

func referencedFiles(name, source string) []string {
	var refs []string
	switch path.Ext(name) {
	case ".html":
		for _, match := range urlAttribute.FindAllStringSubmatch(source, -1) {
			ref := strings.Trim(match[2], `"'`)
			if strings.HasPrefix(ref, AssetPrefix) {
				refs = append(refs, strings.TrimPrefix(ref, AssetPrefix))
			}
		}
	case ".js":
		for _, match := range moduleImport.FindAllStringSubmatch(source, -1) {
			refs = append(refs, path.Join(path.Dir(name), match[1]))
		}
	}
	return refs
}

// TestCheckersReportProblems feeds the checks above with broken files, so
// a check that stopped matching would fail here instead of passing
// silently on the real pages.
func TestCheckersReportProblems(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		file    string
		source  string
		problem string
	}{
		{"inline script body", "bad.html", `<script>alert(1)</script>`, "inline script body"},
		{"module script without src", "bad.html", "<script type=\"module\">\n</script>", "script element without src"},
		{"missing asset", "bad.html", `<link rel="stylesheet" href="/static/missing.css">`, "no file missing.css"},
		{"external stylesheet", "bad.html", `<link href="https://cdn.example.com/x.css">`, "not on this server"},
		{"protocol-relative script", "bad.html", `<script src="//cdn.example.com/x.js"></script>`, "not on this server"},
		{"relative asset path", "bad.html", `<script src="static/app.js"></script>`, "relative URL breaks"},
		{"inline handler", "bad.html", `<button onclick="go()">Go</button>`, "inline event handler"},
		{"inline style attribute", "bad.html", `<div style="color: red">x</div>`, "inline style attribute"},
		{"inline style element", "bad.html", `<style>p { color: red }</style>`, "inline <style> element"},
		{"external URL in text", "bad.html", `<p>see http://example.com/page</p>`, "external URL"},
		{"missing module", "bad.js", `import { x } from "./missing.js";`, "no file missing.js"},
		{"bare module specifier", "bad.js", `import "lodash";`, "not a relative path"},
		{"dynamic import of missing module", "bad.js", `const m = await import("./gone.js");`, "no file gone.js"},
		{"fetch from another host", "bad.js", "fetch(`https://api.example.com/x`)", "external URL"},
		{"external font in CSS", "bad.css", `@import "https://fonts.example.com/f.css";`, "must be relative"},
		{"missing CSS image", "bad.css", `a { background: url(missing.png) }`, "no such file"},
		{"external link in SVG", "bad.svg", `<svg><image href="https://example.com/a.png"/></svg>`, "external URL"},
	}

	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			t.Parallel()

			problems := fileProblems(Files, test.file, test.source)
			found := slices.ContainsFunc(problems, func(problem string) bool {
				return strings.Contains(problem, test.problem)
			})
			if !found {
				t.Errorf("problems = %q, want one containing %q", problems, test.problem)
			}
		})
	}
}

func TestCheckersAcceptValidReferences(t *testing.T) {
	t.Parallel()

	html := `<link rel="stylesheet" href="/static/app.css"><script type="module" src="/static/audience.js"></script><a href="/">Home</a><a href="#main">Skip</a>`
	if problems := fileProblems(Files, "good.html", html); len(problems) > 0 {
		t.Errorf("fileProblems(good.html) = %q, want none", problems)
	}

	js := `import { a } from "./common.js";
const ns = "http://www.w3.org/2000/svg";`
	if problems := fileProblems(Files, "good.js", js); len(problems) > 0 {
		t.Errorf("fileProblems(good.js) = %q, want none", problems)
	}
}

package transport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Browser test settings. Each browser test starts its own Chromium with a fresh
// profile and gives up after browserTestTimeout.
const (
	browserTestTimeout = 2 * time.Minute
	// waitTimeout bounds each wait for something to show on a page.
	waitTimeout = 20 * time.Second
	// axeDefaultPath is where .ci/run installs axe-core, relative to this package.
	axeDefaultPath = "../.ci/axe/node_modules/axe-core/axe.min.js"
)

// Screen sizes the pages are checked and photographed at.
var (
	phoneSize     = [2]int64{320, 640}
	projectorSize = [2]int64{1920, 1080}
)

// requireTool fails under CI=true and skips elsewhere, with how to install the tool.
func requireTool(t *testing.T, format string, args ...any) {
	t.Helper()
	message := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(message)
	}
	t.Skip(message)
}

// chromiumPath returns the Chromium binary: $LIVEVOTE_CHROMIUM, /usr/bin/chromium, or
// chromium on the PATH.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("LIVEVOTE_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	requireTool(t, "browser tests need Chromium: install it with `apt-get install -y chromium` (Debian) or set LIVEVOTE_CHROMIUM to a Chromium binary")
	return ""
}

// browser is one headless Chromium for one test. Pages are tabs of it.
type browser struct {
	t     *testing.T
	ctx   context.Context // the first tab, which owns the browser process
	mu    sync.Mutex
	pages []*page
}

// page is one tab, with the name its screenshots get.
type page struct {
	b    *browser
	name string
	ctx  context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(int(projectorSize[0]), int(projectorSize[1])),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx}

	// The first action starts the browser; it must not carry a timeout of its own.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium %s: %v", path, err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("LIVEVOTE_SCREENSHOTS") != "" {
			b.screenshots()
		}
		cancel()
		cancelAlloc()
	})
	return b
}

// open opens url in a new tab of the given size.
func (b *browser) open(name, url string, size [2]int64) *page {
	b.t.Helper()
	ctx, _ := chromedp.NewContext(b.ctx)
	p := &page{b: b, name: name, ctx: ctx}
	b.mu.Lock()
	b.pages = append(b.pages, p)
	b.mu.Unlock()
	// The first action on a tab's context creates the tab and ties its life to the
	// context of that call, so it runs without a timeout.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(size[0], size[1])); err != nil {
		b.t.Fatalf("open a tab for the %s page: %v", name, err)
	}
	p.do("open "+url, chromedp.Navigate(url))
	return p
}

// do runs actions on the page within waitTimeout and fails the test on error.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.b.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.b.t.Fatalf("%s page: %s: %v", p.name, what, err)
	}
}

// eval evaluates a JavaScript expression and decodes its value into out.
func (p *page) eval(expression string, out any) {
	p.b.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expression, chromedp.EvalAwaitPromise))
	if err != nil {
		p.b.t.Fatalf("%s page: evaluate %.80q: %v", p.name, expression, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			p.b.t.Fatalf("%s page: decode %s: %v", p.name, raw, err)
		}
	}
}

// waitFor waits until the JavaScript expression is truthy. It evaluates the
// expression every 50 ms, so it keeps waiting across a navigation, which destroys
// the page's JavaScript context.
func (p *page) waitFor(what, expression string) {
	p.b.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	check := fmt.Sprintf(`Boolean(%s)`, expression)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(p.ctx, time.Until(deadline))
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](check))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	p.b.t.Fatalf("%s page: %s: not seen within %s (last error: %v); page text:\n%s", p.name, what, waitTimeout, lastErr, body)
}

// waitText waits until the element matching the CSS selector shows text containing want.
func (p *page) waitText(selector, want string) {
	p.b.t.Helper()
	p.waitFor(fmt.Sprintf("%s containing %q", selector, want),
		fmt.Sprintf(`Array.from(document.querySelectorAll(%s)).some((e) => e.offsetParent !== null && e.textContent.includes(%s))`, jsString(selector), jsString(want)))
}

// text returns the text content of the first element matching the CSS selector.
func (p *page) text(selector string) string {
	p.b.t.Helper()
	var s string
	p.eval(fmt.Sprintf(`document.querySelector(%s)?.textContent ?? ""`, jsString(selector)), &s)
	return s
}

// clickButton clicks the visible button whose text is label.
func (p *page) clickButton(label string) {
	p.b.t.Helper()
	p.waitFor("enabled button "+label, buttonExpression(label)+` && !`+buttonExpression(label)+`.disabled`)
	p.eval(buttonExpression(label)+`.click(), true`, nil)
}

func buttonExpression(label string) string {
	return fmt.Sprintf(`Array.from(document.querySelectorAll("button")).find((b) => b.offsetParent !== null && b.textContent.trim() === %s)`, jsString(label))
}

// accessibleButtons counts the buttons in the accessibility tree named name.
func (p *page) accessibleButtons(name string) int {
	p.b.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	count := 0
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		doc, err := chromedp.Evaluate[*runtime.RemoteObject](`document`)(ctx, t)
		if err != nil {
			return err
		}
		res, err := cdp.Call(ctx, t, accessibility.QueryAXTree, accessibility.QueryAXTreeParams{ObjectID: doc.ObjectID, AccessibleName: name, Role: "button"})
		if err != nil {
			return err
		}
		for _, n := range res.Nodes {
			if !n.Ignored {
				count++
			}
		}
		return nil
	}))
	if err != nil {
		p.b.t.Fatalf("%s page: query accessibility tree for %q: %v", p.name, name, err)
	}
	return count
}

// fitsWidth fails when the page scrolls sideways at its current width.
func (p *page) fitsWidth() {
	p.b.t.Helper()
	var widths [2]int
	p.eval(`[document.documentElement.scrollWidth, window.innerWidth]`, &widths)
	if widths[0] > widths[1] {
		p.b.t.Errorf("%s page is %d px wide at a %d px viewport: it scrolls sideways", p.name, widths[0], widths[1])
	}
}

// checkAccessibility runs axe-core's WCAG 2.1 A and AA rules on the page and reports
// each violation. Without axe-core it skips (fails under CI=true).
func (p *page) checkAccessibility() {
	t := p.b.t
	t.Helper()
	source := axeSource(t)
	if source == "" {
		return
	}
	p.eval(source+"\n;true", nil)

	var violations []struct {
		ID    string `json:"id"`
		Help  string `json:"help"`
		Nodes []struct {
			Target []any `json:"target"`
		} `json:"nodes"`
	}
	p.eval(`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}).then((r) => r.violations)`, &violations)
	for _, v := range violations {
		targets := make([]string, 0, len(v.Nodes))
		for _, n := range v.Nodes {
			targets = append(targets, fmt.Sprint(n.Target...))
		}
		t.Errorf("%s page: axe %s: %s at %s", p.name, v.ID, v.Help, strings.Join(targets, ", "))
	}
}

var (
	axeOnce   sync.Once
	axeScript string
	axeErr    error
	axeFrom   string
)

// axeSource returns axe.min.js from $LIVEVOTE_AXE_JS or where .ci/run installs it.
func axeSource(t *testing.T) string {
	t.Helper()
	axeOnce.Do(func() {
		axeFrom = os.Getenv("LIVEVOTE_AXE_JS")
		if axeFrom == "" {
			axeFrom = axeDefaultPath
		}
		var data []byte
		data, axeErr = os.ReadFile(axeFrom)
		axeScript = string(data)
	})
	if axeErr != nil {
		message := fmt.Sprintf("accessibility check needs axe-core at %s (%v): install it with `npm install --prefix .ci/axe axe-core@4.10.3` from the repository root, or set LIVEVOTE_AXE_JS to axe.min.js", axeFrom, axeErr)
		if os.Getenv("CI") == "true" {
			t.Fatal(message)
		}
		t.Log("skipped: " + message)
		return ""
	}
	return axeScript
}

// screenshots saves every open page at phone and projector size as PNG files in
// $LIVEVOTE_SCREENSHOTS, or in a directory under the system's temporary directory.
func (b *browser) screenshots() {
	dir := os.Getenv("LIVEVOTE_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "livevote-screenshots")
	}
	dir = filepath.Join(dir, strings.ReplaceAll(b.t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("screenshots not saved: %v", err)
		return
	}

	b.mu.Lock()
	pages := append([]*page(nil), b.pages...)
	b.mu.Unlock()
	for _, p := range pages {
		for sizeName, size := range map[string][2]int64{"phone": phoneSize, "projector": projectorSize} {
			ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
			var shot []byte
			err := chromedp.Do(ctx, chromedp.EmulateViewport(size[0], size[1]), chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
				var err error
				shot, err = chromedp.FullScreenshot(100)(ctx, t)
				return err
			}))
			cancel()
			if err != nil {
				b.t.Logf("screenshot of %s page at %s size failed: %v", p.name, sizeName, err)
				continue
			}
			file := filepath.Join(dir, p.name+"-"+sizeName+".png")
			if err := os.WriteFile(file, shot, 0o644); err != nil {
				b.t.Logf("screenshot not saved: %v", err)
				continue
			}
			b.t.Logf("screenshot saved: %s", file)
		}
	}
}

func jsString(s string) string {
	data, _ := json.Marshal(s)
	return string(data)
}

// cutProxy forwards TCP connections from its own loopback address to the node, and
// can cut them all and refuse new ones, as a phone that loses the network does.
type cutProxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	p := &cutProxy{t: t, addr: "127.0.0.1:0", target: target, conns: make(map[net.Conn]struct{})}
	p.restore()
	t.Cleanup(func() {
		p.cut()
		p.wg.Wait()
	})
	return p
}

// restore listens again on the proxy's address.
func (p *cutProxy) restore() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen on %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.addr = ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() { p.accept(ln) })
}

// cut closes the listener and every forwarded connection.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *cutProxy) accept(ln net.Listener) {
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.ln != ln {
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { pipe(client, server) })
		p.wg.Go(func() { pipe(server, client) })
	}
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

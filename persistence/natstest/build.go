package natstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// serverTool is the import path of the nats-server tool that go.mod
// declares.
const serverTool = "github.com/nats-io/nats-server/v2"

// buildTimeout bounds the build of nats-server: a compile of tens of
// seconds, plus the download of its dependencies while the module cache is
// cold.
const buildTimeout = 5 * time.Minute

// build holds the result of the one build of the test process.
var build struct {
	once sync.Once
	path string
	err  error
}

// serverBinary returns the path of the nats-server executable, building it
// on the first call of the process.
func serverBinary() (string, error) {
	build.once.Do(func() {
		build.path, build.err = buildServer()
	})

	return build.path, build.err
}

// buildServer runs `go tool -n` on the nats-server tool in the working
// directory, which a test runs in its package's directory inside the
// module. For a tool of the module, the go command compiles the executable
// into the Go build cache when it is not there yet and prints its path, so
// the build is shared between test processes and needs no cleanup.
func buildServer() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "tool", "-n", serverTool)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr

	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		return "", fmt.Errorf("build nats-server: `go tool -n %s` did not finish within %s; "+
			"a cold module cache downloads the dependencies first, so check the network or run `go mod download`",
			serverTool, buildTimeout)
	}
	if err != nil {
		return "", fmt.Errorf("build nats-server with `go tool -n %s`: %w\n%s", serverTool, err, stderr.Bytes())
	}

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	path := strings.TrimSpace(lines[len(lines)-1])

	info, err := os.Stat(path)
	if err == nil && (!info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0) {
		err = errors.New("not an executable file")
	}
	if err != nil {
		return "", fmt.Errorf("build nats-server: `go tool -n %s` printed %q, which is not a usable executable: %v",
			serverTool, path, err)
	}

	// A slow first test is easier to read with the build time beside it.
	elapsed := time.Since(start)
	if elapsed > 10*time.Second {
		fmt.Fprintf(os.Stderr, "natstest: built nats-server in %s\n", elapsed.Round(time.Second))
	}

	return path, nil
}

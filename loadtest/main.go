// Command loadtest will drive WebSocket and HTTP voter swarms against a LiveVote server.
// It is not built yet: it prints that and exits with status 2.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "loadtest: the load tester is not built yet; use `go test -bench . ./...` for the current benchmarks")
	os.Exit(2)
}

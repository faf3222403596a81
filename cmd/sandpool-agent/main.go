// Command sandpool-agent runs inside every sandbox, installed at
// /.sandpool/agent by `make rootfs`: `sandpool-agent init` is the sandbox's
// init process and `sandpool-agent run -- argv...` is what runsc exec starts
// for an execution (see package runsc/agent).
package main

import (
	"os"
	"strconv"
	"strings"

	"github.com/sandpool/sandpool/runsc/agent"
)

const usage = "usage: sandpool-agent init | sandpool-agent run [--status-fd=N] -- argv...\n"

func main() {
	args := os.Args[1:]
	if len(args) == 1 && args[0] == "init" {
		err := agent.Init(agent.Socket)
		_, _ = os.Stderr.WriteString("sandpool-agent: init: " + err.Error() + "\n")
		os.Exit(1)
	}
	if len(args) >= 2 && args[0] == "run" {
		opts := agent.Options{Socket: agent.Socket, StatusFD: -1, Fallback: true}
		args = args[1:]
		if v, ok := strings.CutPrefix(args[0], "--status-fd="); ok {
			fd, err := strconv.Atoi(v)
			if err != nil || fd < 0 {
				fail()
			}
			opts.StatusFD = fd
			args = args[1:]
		}
		if len(args) > 0 && args[0] == "--" {
			os.Exit(agent.Run(args[1:], opts))
		}
	}
	fail()
}

func fail() {
	_, _ = os.Stderr.WriteString(usage)
	os.Exit(2)
}

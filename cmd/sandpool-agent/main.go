// Command sandpool-agent runs inside every sandbox, installed at
// /.sandpool/agent by `make rootfs`: `sandpool-agent init` is the sandbox's
// init process and `sandpool-agent run -- argv...` is what runsc exec starts
// for an execution (see package runsc/agent).
package main

import (
	"os"

	"github.com/sandpool/sandpool/runsc/agent"
)

const usage = "usage: sandpool-agent init | sandpool-agent run -- argv...\n"

func main() {
	args := os.Args[1:]
	switch {
	case len(args) == 1 && args[0] == "init":
		err := agent.Init(agent.Socket)
		_, _ = os.Stderr.WriteString("sandpool-agent: init: " + err.Error() + "\n")
		os.Exit(1)
	case len(args) >= 2 && args[0] == "run" && args[1] == "--":
		os.Exit(agent.Run(agent.Socket, args[2:], true))
	default:
		_, _ = os.Stderr.WriteString(usage)
		os.Exit(2)
	}
}

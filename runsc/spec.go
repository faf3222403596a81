package runsc

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandpool/sandpool/runsc/agent"
)

// RootfsTarAnnotation names the tar runsc unpacks into a new sandbox's
// root overlay (a filesystem snapshot).
const RootfsTarAnnotation = "dev.gvisor.tar.rootfs.upper"

// defaultCwd is where executions start unless they ask for another cwd.
const defaultCwd = "/root"

// initArgs run the sandbox's main process, sandpool-agent's init (make
// rootfs installs it at agent.Path). It keeps the container alive, reaps
// orphans, ignores every catchable signal (in gVisor a signal to PID 1 from
// inside the sandbox, `kill 1` in user code, otherwise stops the whole
// sandbox) and starts the programs of executions (see execSpec).
var initArgs = []string{agent.Path, "init"}

// BaseEnv is the environment every process in a sandbox starts with.
var BaseEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
	"PYTHONUNBUFFERED=1",
	"TERM=dumb",
}

// capabilities are Docker's defaults: root inside the sandbox can manage its
// own files and processes; gVisor, not capabilities, is the boundary.
var capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// SpecConfig is what varies between sandboxes' OCI specs.
type SpecConfig struct {
	// Rootfs is the absolute host path of the shared root filesystem. It is
	// the lower layer of a memory-backed overlay, so sandboxes never write it.
	Rootfs string
	// Hostname defaults to "sandbox".
	Hostname string
	// Env is appended to BaseEnv for the init process.
	Env []string
	// Annotations are passed to runsc (for example a rootfs tar to restore).
	Annotations map[string]string
}

// BuildSpec returns the OCI spec of a sandbox: its own namespaces, the shared
// rootfs under an overlay (the runner passes --overlay2=root:memory), and an
// init process that keeps the container alive.
func BuildSpec(cfg SpecConfig) *specs.Spec {
	hostname := cfg.Hostname
	if hostname == "" {
		hostname = "sandbox"
	}
	return &specs.Spec{
		Version: specs.Version,
		Process: processSpec(ProcessSpec{
			Args: initArgs,
			Env:  cfg.Env,
		}),
		// Writable from the sandbox's point of view; the overlay keeps every
		// write in the sandbox's memory and the host directory untouched.
		Root:     &specs.Root{Path: cfg.Rootfs, Readonly: false},
		Hostname: hostname,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Annotations: cfg.Annotations,
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace},
			},
		},
	}
}

// execSpec is the OCI process `runsc exec` starts for an execution: the
// agent's relay, which has init start p's program with the relay's
// environment, cwd and stdio. gVisor kills every process of exec origin
// when it restores a checkpoint; init's children are not, so background
// jobs of executions survive a checkpoint and restore. The relay exits
// with the program's code; init reports the program's pid and exit on a
// status pipe (fd 3), so the host kills the program's group itself and an
// execution outlives a relay killed by user code.
//
// An argv or environment too large for execve inside the sandbox (code of
// more than 128 KiB in one argument) runs as runsc exec runs it, without
// the relay: runsc starts a process without execve's limits, init cannot.
// Such an execution behaves the same, except that its background jobs die
// on a restore.
func execSpec(p ProcessSpec) *specs.Process {
	proc := processSpec(p)
	if !p.SurviveRestore || !fitsExecve(proc.Args) || !fitsExecve(proc.Env) {
		return proc
	}
	proc.Args = append([]string{agent.Path, "run", fmt.Sprintf("--status-fd=%d", relayStatusFD), "--"}, p.Args...)
	return proc
}

// usesRelay reports whether proc is the agent's relay (see execSpec).
func usesRelay(proc *specs.Process) bool {
	return len(proc.Args) > 0 && proc.Args[0] == agent.Path
}

// gVisor's execve limits (pkg/sentry/syscalls/linux: ExecMaxElemSize and
// ExecMaxTotalSize), which Linux shares: a string's length with its NUL,
// and the sum of those over argv or over the environment.
const (
	execMaxElemSize  = 32 * 4096
	execMaxTotalSize = 2 << 20
)

// fitsExecve reports whether v passes execve's limits inside the sandbox.
func fitsExecve(v []string) bool {
	total := 0
	for _, s := range v {
		if len(s)+1 > execMaxElemSize {
			return false
		}
		total += len(s) + 1
	}
	return total <= execMaxTotalSize
}

// processSpec is the OCI process of a sandbox's init or an execution: root
// inside the sandbox, the base environment with overrides, and /root as
// the default cwd.
func processSpec(p ProcessSpec) *specs.Process {
	cwd := p.Cwd
	if cwd == "" {
		cwd = defaultCwd
	}
	return &specs.Process{
		Args: p.Args,
		Env:  mergeEnv(BaseEnv, p.Env),
		Cwd:  cwd,
		User: specs.User{UID: 0, GID: 0},
		Capabilities: &specs.LinuxCapabilities{
			Bounding:  capabilities,
			Effective: capabilities,
			Permitted: capabilities,
		},
		NoNewPrivileges: true,
	}
}

// mergeEnv returns base with every "K=V" of overrides replacing base's K.
func mergeEnv(base, overrides []string) []string {
	out := make([]string, 0, len(base)+len(overrides))
	index := make(map[string]int, len(base)+len(overrides))
	for _, kv := range append(append([]string{}, base...), overrides...) {
		key := kv
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				key = kv[:i]
				break
			}
		}
		if i, ok := index[key]; ok {
			out[i] = kv
			continue
		}
		index[key] = len(out)
		out = append(out, kv)
	}
	return out
}

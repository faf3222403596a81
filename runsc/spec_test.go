package runsc

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sandpool/sandpool/runsc/agent"
)

// envMap turns "K=V" entries into a map, failing on duplicate keys: a
// process with two PATHs would get whichever runsc picks.
func envMap(t *testing.T, env []string) map[string]string {
	t.Helper()
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		_, dup := m[k]
		require.False(t, dup, "duplicate env key %q in %v", k, env)
		m[k] = v
	}
	return m
}

func TestBuildSpec(t *testing.T) {
	spec := BuildSpec(SpecConfig{
		Rootfs:      "/srv/rootfs",
		Env:         []string{"FOO=bar", "LANG=en_US.UTF-8"},
		Annotations: map[string]string{"dev.gvisor.tar.rootfs.upper": "/tmp/upper.tar"},
	})

	require.NotNil(t, spec.Root)
	assert.Equal(t, specs.Version, spec.Version)
	assert.Equal(t, "/srv/rootfs", spec.Root.Path)
	// The overlay keeps writes in memory; the sandbox must still see a
	// writable root.
	assert.False(t, spec.Root.Readonly)
	assert.Equal(t, "sandbox", spec.Hostname)
	assert.Equal(t, map[string]string{"dev.gvisor.tar.rootfs.upper": "/tmp/upper.tar"}, spec.Annotations)

	require.NotNil(t, spec.Linux)
	var namespaces []specs.LinuxNamespaceType
	for _, ns := range spec.Linux.Namespaces {
		assert.Empty(t, ns.Path, "namespace %s must be new, not joined", ns.Type)
		namespaces = append(namespaces, ns.Type)
	}
	assert.ElementsMatch(t, []specs.LinuxNamespaceType{
		specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace,
		specs.MountNamespace, specs.NetworkNamespace,
	}, namespaces)

	var mounts []string
	for _, m := range spec.Mounts {
		mounts = append(mounts, m.Destination)
	}
	assert.ElementsMatch(t, []string{"/proc", "/dev", "/sys"}, mounts)

	// The agent is init: it keeps the container alive, reaps orphans and
	// starts the executions' programs.
	require.NotNil(t, spec.Process)
	assert.Equal(t, []string{agent.Path, "init"}, spec.Process.Args)
	assert.Equal(t, defaultCwd, spec.Process.Cwd)

	env := envMap(t, spec.Process.Env)
	assert.Contains(t, env["PATH"], "/usr/bin")
	assert.Equal(t, "1", env["PYTHONUNBUFFERED"])
	assert.Equal(t, "bar", env["FOO"])
	assert.Equal(t, "en_US.UTF-8", env["LANG"], "sandbox env overrides the base")
}

func TestBuildSpecHostname(t *testing.T) {
	for _, tc := range []struct {
		name, hostname, want string
	}{
		{"default", "", "sandbox"},
		{"explicit", "box-1", "box-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := BuildSpec(SpecConfig{Rootfs: "/r", Hostname: tc.hostname})
			assert.Equal(t, tc.want, spec.Hostname)
		})
	}
}

func TestBuildSpecNoAnnotations(t *testing.T) {
	assert.Empty(t, BuildSpec(SpecConfig{Rootfs: "/r"}).Annotations)
}

// An execution runs the agent's relay, with the program's argv after "--"
// and the program's env and cwd.
func TestExecSpec(t *testing.T) {
	in := ProcessSpec{Args: []string{"bash", "-c", "echo hi"}, Env: []string{"A=1"}, Cwd: "/tmp", SurviveRestore: true}
	p := execSpec(in)
	assert.Equal(t, []string{agent.Path, "run", "--status-fd=3", "--", "bash", "-c", "echo hi"}, p.Args)
	assert.True(t, usesRelay(p))
	assert.Equal(t, "/tmp", p.Cwd)
	assert.Equal(t, "1", envMap(t, p.Env)["A"])
	assert.Equal(t, []string{"bash", "-c", "echo hi"}, in.Args, "the caller's args are not modified")
	assert.Equal(t, "/root", execSpec(ProcessSpec{Args: []string{"x"}}).Cwd)
	in.SurviveRestore = false
	assert.Equal(t, in.Args, execSpec(in).Args, "runsc exec runs the program itself")
}

// What execve inside the sandbox refuses runs without the relay, as runsc
// exec ran every execution before the agent.
func TestExecSpecTooLargeForExecve(t *testing.T) {
	fits := strings.Repeat("x", execMaxElemSize-1)
	tooLong := fits + "x"
	for _, tc := range []struct {
		name  string
		in    ProcessSpec
		relay bool
	}{
		{"largest argument", ProcessSpec{Args: []string{"python3", "-c", fits}}, true},
		{"argument too long", ProcessSpec{Args: []string{"python3", "-c", tooLong}}, false},
		{"argv too large", ProcessSpec{Args: []string{"python3", "-c", fits, fits, fits, fits, fits, fits, fits, fits, fits, fits, fits, fits, fits, fits, fits, fits}}, false},
		{"env value too long", ProcessSpec{Args: []string{"true"}, Env: []string{"BIG=" + fits}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.SurviveRestore = true
			p := execSpec(tc.in)
			if tc.relay {
				assert.Equal(t, append([]string{agent.Path, "run", "--status-fd=3", "--"}, tc.in.Args...), p.Args)
			} else {
				assert.Equal(t, tc.in.Args, p.Args)
			}
			assert.Equal(t, tc.relay, usesRelay(p))
		})
	}
}

func TestProcessSpec(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      ProcessSpec
		wantCwd string
		wantEnv map[string]string // checked entries only
	}{
		{
			name:    "defaults",
			in:      ProcessSpec{Args: []string{"python3", "-c", "print(1)"}},
			wantCwd: "/root",
			wantEnv: map[string]string{"HOME": "/root", "PYTHONUNBUFFERED": "1", "TERM": "dumb"},
		},
		{
			name:    "cwd and overrides",
			in:      ProcessSpec{Args: []string{"sh"}, Cwd: "/tmp", Env: []string{"PATH=/opt/bin", "HOME=/home/x", "NEW=1"}},
			wantCwd: "/tmp",
			wantEnv: map[string]string{"PATH": "/opt/bin", "HOME": "/home/x", "NEW": "1", "LANG": "C.UTF-8"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := processSpec(tc.in)
			assert.Equal(t, tc.in.Args, p.Args)
			assert.Equal(t, tc.wantCwd, p.Cwd)
			assert.Equal(t, specs.User{UID: 0, GID: 0}, p.User)
			assert.True(t, p.NoNewPrivileges)

			env := envMap(t, p.Env)
			for k, v := range tc.wantEnv {
				assert.Equal(t, v, env[k], "env %s", k)
			}
			assert.Len(t, env, len(BaseEnv)+countNewKeys(tc.in.Env))

			require.NotNil(t, p.Capabilities)
			for name, set := range map[string][]string{
				"bounding": p.Capabilities.Bounding, "effective": p.Capabilities.Effective, "permitted": p.Capabilities.Permitted,
			} {
				assert.Subset(t, set, []string{"CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_DAC_OVERRIDE"}, name)
				assert.NotContains(t, set, "CAP_SYS_ADMIN", name)
			}
		})
	}
}

// countNewKeys counts override keys that are not already in BaseEnv.
func countNewKeys(env []string) int {
	base := map[string]bool{}
	for _, kv := range BaseEnv {
		k, _, _ := strings.Cut(kv, "=")
		base[k] = true
	}
	n := 0
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !base[k] {
			base[k] = true
			n++
		}
	}
	return n
}

func TestMergeEnv(t *testing.T) {
	base := []string{"A=1", "B=2", "C=3"}
	for _, tc := range []struct {
		name      string
		overrides []string
		want      []string
	}{
		{"no overrides", nil, []string{"A=1", "B=2", "C=3"}},
		{"replace keeps position", []string{"B=20"}, []string{"A=1", "B=20", "C=3"}},
		{"new keys appended in order", []string{"E=5", "D=4"}, []string{"A=1", "B=2", "C=3", "E=5", "D=4"}},
		{"last override wins", []string{"A=x", "A=y"}, []string{"A=y", "B=2", "C=3"}},
		{"empty value replaces", []string{"C="}, []string{"A=1", "B=2", "C="}},
		{"value containing =", []string{"A=k=v"}, []string{"A=k=v", "B=2", "C=3"}},
		{"entry without = is its own key", []string{"FLAG", "FLAG"}, []string{"A=1", "B=2", "C=3", "FLAG"}},
		{"prefix is not the same key", []string{"AB=9"}, []string{"A=1", "B=2", "C=3", "AB=9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeEnv(base, tc.overrides)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, []string{"A=1", "B=2", "C=3"}, base, "base must not be modified")
		})
	}
}

// The result must not share memory with BaseEnv, or one sandbox's process
// env could leak into every other's.
func TestMergeEnvDoesNotAliasBase(t *testing.T) {
	before := append([]string(nil), BaseEnv...)
	got := mergeEnv(BaseEnv, nil)
	got[0] = "PATH=/evil"
	assert.Equal(t, before, BaseEnv)
}

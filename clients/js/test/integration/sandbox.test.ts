// The client against the real server with real runsc: every capability of
// the API, end to end.

import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox, SandboxProcess } from '../../src/index.js';
import { missingPrerequisite, TestServer } from '../helpers/server.js';
import { DroppingProxy, hostPort } from '../helpers/proxy.js';

const skip = missingPrerequisite();

describe.skipIf(skip)('sandbox against the real server', () => {
  let server: TestServer;
  const sandboxes: Sandbox[] = [];

  beforeAll(async () => {
    server = await new TestServer().start();
  });

  afterAll(async () => {
    // Kill what a failed test left, then check the server left nothing.
    await Promise.allSettled(sandboxes.map((s) => s.kill()));
    const leaks = await server?.stop();
    expect(leaks).toEqual([]);
  });

  async function create(options: Parameters<typeof Sandbox.create>[1] = {}): Promise<Sandbox> {
    const sandbox = await Sandbox.create(server.url, options);
    sandboxes.push(sandbox);
    return sandbox;
  }

  async function run(sandbox: Sandbox, language: string, code: string): Promise<{ stdout: string; stderr: string; code: number | null; proc: SandboxProcess }> {
    const proc = await sandbox.exec(language, code);
    const [stdout, stderr, exit] = await Promise.all([proc.stdout.readAll(), proc.stderr.readAll(), proc.wait()]);
    return { stdout, stderr, code: exit, proc };
  }

  it('creates a sandbox and runs python and bash with exit codes', async () => {
    const sandbox = await create();
    expect(sandbox.sandboxId).toMatch(/^[0-9a-f]{32}$/);
    expect(sandbox.sandboxToken).toMatch(/^[0-9a-f]{64}$/);
    expect(sandbox.state).toBe('running');

    const py = await run(sandbox, 'python', 'import sys\nprint("hello from python")\nprint("oops", file=sys.stderr)');
    expect(py).toMatchObject({ stdout: 'hello from python\n', stderr: 'oops\n', code: 0 });

    const sh = await run(sandbox, 'bash', 'echo "héllo ✓"; echo err >&2; exit 3');
    expect(sh).toMatchObject({ stdout: 'héllo ✓\n', stderr: 'err\n', code: 3 });
    expect(sh.proc.exitCode).toBe(3);

    // Files written by one execution are seen by the next.
    await run(sandbox, 'bash', 'echo kept > /root/note');
    expect((await run(sandbox, 'bash', 'cat /root/note')).stdout).toBe('kept\n');

    await sandbox.kill();
    expect(sandbox.state).toBe('killed');
    expect(server.containers()).not.toContain(sandbox.sandboxId);
  });

  it('streams output as it is produced, not at exit', async () => {
    const sandbox = await create();
    const proc = await sandbox.exec('bash', 'echo first; read line; echo "second $line"');
    const first = await new Promise<string>((resolve) => proc.stdout.once('data', (chunk: Buffer) => resolve(chunk.toString())));
    expect(first).toBe('first\n');
    proc.writeToStdin('go\n');
    expect(await proc.stdout.readAll()).toBe('second go\n');
    expect(await proc.wait()).toBe(0);
    await sandbox.kill();
  });

  it('writes stdin and closes it', async () => {
    const sandbox = await create();
    const proc = await sandbox.exec('python', 'import sys\ndata = sys.stdin.read()\nprint(data.upper(), end="")\nprint("|eof")');
    proc.writeToStdin('abc\n');
    proc.writeToStdin('def');
    proc.closeStdin();
    expect(await proc.stdout.readAll()).toBe('ABC\nDEF|eof\n');
    expect(await proc.wait()).toBe(0);
    expect(() => proc.writeToStdin('late')).toThrow('Process has already completed.');
    await sandbox.kill();
  });

  it('kills a process group and keeps the sandbox usable', async () => {
    const sandbox = await create();
    const proc = await sandbox.exec('bash', 'sleep 300 & echo started; while true; do sleep 1; done');
    await new Promise((resolve) => proc.stdout.once('data', resolve));
    await proc.kill();
    expect(proc.isDone).toBe(true);
    expect(proc.reason).toBe('killed');
    expect(await proc.wait()).toBe(137);
    // The background sleep was in the group: nothing is left running.
    const ps = await run(sandbox, 'bash', 'ps -eo comm | grep -c "^sleep" || true');
    expect(ps.stdout.trim()).toBe('0');
    await sandbox.kill();
  });

  it('passes env, cwd and timeout', async () => {
    const sandbox = await create();
    const proc = await sandbox.exec('bash', 'echo "$GREETING from $(pwd)"', { env: { GREETING: 'hi' }, cwd: '/tmp' });
    expect(await proc.stdout.readAll()).toBe('hi from /tmp\n');
    const slow = await sandbox.exec('bash', 'sleep 30', { timeout: 1 });
    expect(await slow.wait()).toBe(137);
    expect(slow.reason).toBe('timeout');
    await sandbox.kill();
  });

  it('snapshots the filesystem and creates a sandbox from it', async () => {
    const first = await create();
    await run(first, 'bash', 'mkdir -p /data && echo "from the snapshot" > /data/file && echo tmpfile > /tmp/t');
    await first.snapshotFilesystem('js-snap');
    expect(first.state).toBe('running');
    await first.kill();

    const second = await create({ filesystemSnapshotName: 'js-snap' });
    expect(second.info.filesystemSnapshotName).toBe('js-snap');
    expect((await run(second, 'bash', 'cat /data/file /tmp/t')).stdout).toBe('from the snapshot\ntmpfile\n');
    await second.kill();
  });

  it('ends with a close event when the idle timeout deletes the sandbox', async () => {
    const sandbox = await create({ idleTimeout: 1 });
    const id = sandbox.sandboxId;
    const [err] = (await once(sandbox, 'close')) as [Error | undefined];
    expect(err?.message).toBe('The sandbox was deleted.');
    expect(sandbox.state).toBe('deleted');
    expect(server.containers()).not.toContain(id);
    await expect(sandbox.exec('bash', 'true')).rejects.toThrow('Current state: deleted');
  });

  it('attaches with the token after close()', async () => {
    const sandbox = await create();
    await run(sandbox, 'bash', 'echo 42 > /root/answer');
    const { sandboxId, sandboxToken } = sandbox.info;
    await sandbox.close();
    expect(sandbox.state).toBe('closed');
    await expect(sandbox.exec('bash', 'true')).rejects.toThrow('Sandbox is not in a running state');

    const again = await Sandbox.attach(server.url, sandboxId, sandboxToken);
    sandboxes.push(again);
    expect(again.sandboxId).toBe(sandboxId);
    expect((await run(again, 'bash', 'cat /root/answer')).stdout).toBe('42\n');
    await again.kill();
  });

  // cut: the proxy closes both sockets; freeze: it stops forwarding and
  // keeps them open, so only the client's heartbeat notices, and the
  // server replaces the silent holder when the re-attach comes. Either
  // way the server wrote output into a socket that never delivered it;
  // what the client never confirmed is replayed, and skipped by offset
  // where the client had it.
  it.each(['cut', 'freeze'] as const)('reconnects through a %s connection without losing output or stdin', async (how) => {
    const proxy = await new DroppingProxy(...hostPort(server.url)).listen();
    try {
      const sandbox = await Sandbox.create(proxy.url, {
        enableAutoReconnect: true,
        reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
        heartbeatIntervalMs: 200,
      });
      sandboxes.push(sandbox);
      const events: string[] = [];
      sandbox.on('reconnecting', () => events.push('reconnecting'));
      sandbox.on('reconnected', () => events.push('reconnected'));

      // Prints a numbered line every 50 ms, and echoes stdin when it sees it.
      const proc = await sandbox.exec(
        'python',
        [
          'import sys, time, select',
          'for i in range(100):',
          '    print(f"line {i}", flush=True)',
          '    if select.select([sys.stdin], [], [], 0.05)[0]:',
          '        print("stdin " + sys.stdin.readline().strip(), flush=True)',
        ].join('\n'),
      );
      let out = '';
      proc.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
      });
      await waitFor(() => out.includes('line 5\n'));
      const reconnecting = once(sandbox, 'reconnecting');
      proxy[how]();
      await reconnecting;
      expect(sandbox.state).toBe('reconnecting');
      // Written while no socket exists: buffered, then sent after re-attach.
      proc.writeToStdin('while-away\n');

      expect(await proc.wait()).toBe(0);
      const lines = out.trimEnd().split('\n');
      const numbered = lines.filter((l) => l.startsWith('line '));
      expect(numbered).toEqual(Array.from({ length: 100 }, (_, i) => `line ${i}`));
      expect(lines.filter((l) => l === 'stdin while-away')).toHaveLength(1);
      expect(events).toContain('reconnected');
      expect(sandbox.state).toBe('running');
      await sandbox.kill();
    } finally {
      await proxy.close();
    }
  });

  it('checkpoints and restores memory, processes and files', async () => {
    const sandbox = await create({ enableSandboxCheckpoint: true });
    await run(sandbox, 'bash', 'echo durable > /root/state; (while true; do date +%s%N >> /tmp/ticks; sleep 0.1; done) > /dev/null 2>&1 &');
    const before = Number((await run(sandbox, 'bash', 'sleep 0.3; wc -l < /tmp/ticks')).stdout);
    expect(before).toBeGreaterThan(0);
    const { sandboxId, sandboxToken } = sandbox.info;

    await sandbox.checkpoint();
    expect(sandbox.state).toBe('checkpointed');
    expect(server.containers()).not.toContain(sandboxId);

    const restored = await Sandbox.attach(server.url, sandboxId, sandboxToken);
    sandboxes.push(restored);
    expect((await run(restored, 'bash', 'cat /root/state')).stdout).toBe('durable\n');
    // The background loop survived and keeps counting.
    await waitFor(async () => Number((await run(restored, 'bash', 'wc -l < /tmp/ticks')).stdout) > before + 2);
    await restored.kill();
  });
});

/** Polls cond every 50 ms for up to 30 s. */
async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) {
      throw new Error(`condition not met within ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

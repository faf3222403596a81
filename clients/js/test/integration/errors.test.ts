// Every error path of the client against the real server: the right error
// class, the server's own text, and a sandbox that stays usable where the
// protocol says so.

import { readdirSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Sandbox,
  SandboxAttachError,
  SandboxCheckpointError,
  SandboxConnectionError,
  SandboxCreationError,
  SandboxExecutionError,
  SandboxSnapshotError,
} from '../../src/index.js';
import { missingPrerequisite, TestServer } from '../helpers/server.js';

const skip = missingPrerequisite();

/** The rejection of p, which must reject. */
async function rejection(p: Promise<unknown>): Promise<Error & { status?: string; closeCode?: number }> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err) => err,
  );
}

describe.skipIf(skip)('error paths against the real server', () => {
  let server: TestServer;
  let bare: TestServer; // no snapshots, no checkpoints
  const sandboxes: Sandbox[] = [];

  beforeAll(async () => {
    server = new TestServer();
    bare = new TestServer({ snapshots: false, checkpoints: false });
    await Promise.all([server.start(), bare.start()]);
  });

  afterAll(async () => {
    await Promise.allSettled(sandboxes.map((s) => s.kill()));
    const leaks = await Promise.all([server?.stop(), bare?.stop()]);
    expect(leaks).toEqual([[], []]);
  });

  async function create(on: TestServer, options: Parameters<typeof Sandbox.create>[1] = {}): Promise<Sandbox> {
    const sandbox = await Sandbox.create(on.url, options);
    sandboxes.push(sandbox);
    return sandbox;
  }

  it.each([
    ['an unknown snapshot', { filesystemSnapshotName: 'no-such-snapshot' }, 'Filesystem snapshot not found: no-such-snapshot'],
    ['handoff without checkpoint', { enableSandboxHandoff: true }, "Invalid init message: 'enable_sandbox_handoff' requires 'enable_checkpoint'."],
    ['a negative idle timeout', { idleTimeout: -1 }, "Invalid init message: 'idle_timeout' must be a non-negative number of seconds or null."],
  ])('create with %s fails with the server text', async (_, options, message) => {
    const err = await rejection(Sandbox.create(server.url, options));
    expect(err).toBeInstanceOf(SandboxCreationError);
    expect(err.message).toBe(message);
    expect(err.status).toBe('SANDBOX_CREATION_ERROR');
  });

  it.each([
    ['checkpointing', { enableSandboxCheckpoint: true }, 'Checkpointing is not enabled on the server.'],
    ['a snapshot', { filesystemSnapshotName: 'x' }, 'Filesystem snapshot is not enabled on the server.'],
  ])('create with %s on a server without it fails with the server text', async (_, options, message) => {
    const err = await rejection(Sandbox.create(bare.url, options));
    expect(err).toBeInstanceOf(SandboxCreationError);
    expect(err.message).toBe(message);
  });

  it('snapshot on a server without snapshots, and with a bad name', async () => {
    const onBare = await create(bare);
    let err = await rejection(onBare.snapshotFilesystem('s'));
    expect(err).toBeInstanceOf(SandboxSnapshotError);
    expect(err.message).toBe('Filesystem snapshot is not enabled on the server.');
    expect(onBare.state).toBe('running');
    await onBare.kill();

    const sandbox = await create(server);
    err = await rejection(sandbox.snapshotFilesystem('../escape'));
    expect(err).toBeInstanceOf(SandboxSnapshotError);
    expect(err.message).toMatch(/snapshot name/i);
    expect(err.status).toBe('SANDBOX_FILESYSTEM_SNAPSHOT_ERROR');
    // Still usable.
    const proc = await sandbox.exec('bash', 'echo still here');
    expect(await proc.stdout.readAll()).toBe('still here\n');
    await sandbox.kill();
  });

  it.each([
    ['an unsupported language', 'ruby', 'puts 1', {}, "Unsupported language: 'ruby'. Supported languages are: python, bash"],
    ['no code', 'python', undefined, {}, 'The execute request has no code.'],
    ['a relative cwd', 'bash', 'pwd', { cwd: 'tmp' }, "Invalid execute request: 'cwd' must be an absolute path."],
    ['a negative timeout', 'bash', 'true', { timeout: -1 }, "Invalid execute request: 'timeout' must be a positive number of seconds."],
  ])('exec with %s fails with the server text and the sandbox stays usable', async (_, language, code, opts, message) => {
    const sandbox = await create(server);
    const err = await rejection(sandbox.exec(language, code as string, opts));
    expect(err).toBeInstanceOf(SandboxExecutionError);
    expect(err.message).toBe(message);
    const proc = await sandbox.exec('bash', 'echo ok');
    expect(await proc.stdout.readAll()).toBe('ok\n');
    expect(await proc.wait()).toBe(0);
    await sandbox.kill();
  });

  it('create beyond the server cap fails with the server text', async () => {
    const tiny = new TestServer({ maxSandboxes: 1, warm: 0, snapshots: false, checkpoints: false });
    await tiny.start();
    try {
      const first = await Sandbox.create(tiny.url);
      const err = await rejection(Sandbox.create(tiny.url));
      expect(err).toBeInstanceOf(SandboxCreationError);
      expect(err.message).toBe('Sandbox capacity reached: the server runs its maximum of 1 sandboxes; try again later');
      await first.kill();
      // The slot is free once KILLED is heard, not only when the server's actor has ended.
      const again = await Sandbox.create(tiny.url);
      await again.kill();
    } finally {
      expect(await tiny.stop()).toEqual([]);
    }
  });

  it('exec after an attach while the previous connection\'s execution runs is refused by the server', async () => {
    const holder = await create(server);
    await holder.exec('bash', 'read line; echo "got $line"');
    await holder.close();
    const again = await Sandbox.attach(server.url, holder.info.sandboxId, holder.info.sandboxToken);
    sandboxes.push(again);
    const err = await rejection(again.exec('bash', 'true'));
    expect(err).toBeInstanceOf(SandboxExecutionError);
    expect(err.message).toBe('An execution is already in progress.');
    expect(err.status).toBe('SANDBOX_EXECUTION_ERROR');
    expect(again.state).toBe('running');
    await again.kill();
  });

  it('checkpoint during an execution is refused and changes nothing', async () => {
    const sandbox = await create(server, { enableSandboxCheckpoint: true });
    const proc = await sandbox.exec('bash', 'read line; echo "got $line"');
    const err = await rejection(sandbox.checkpoint());
    expect(err).toBeInstanceOf(SandboxCheckpointError);
    expect(err.message).toBe('Cannot checkpoint while an execution is in progress.');
    expect(sandbox.state).toBe('running');
    proc.writeToStdin('it\n');
    expect(await proc.stdout.readAll()).toBe('got it\n');
    await sandbox.kill();
  });

  it('checkpoint of a sandbox created without it fails and closes the connection', async () => {
    const sandbox = await create(server);
    const err = await rejection(sandbox.checkpoint());
    expect(err).toBeInstanceOf(SandboxCheckpointError);
    expect(err.message).toBe('Checkpointing is not enabled for this sandbox: create it with enable_checkpoint.');
    // The sandbox itself is untouched: attach and kill it.
    const again = await Sandbox.attach(server.url, sandbox.info.sandboxId, sandbox.info.sandboxToken);
    sandboxes.push(again);
    await again.kill();
  });

  it('attach refusals carry the server text', async () => {
    const holder = await create(server);
    const { sandboxId, sandboxToken } = holder.info;
    const cases: Array<[string, string, string, string]> = [
      ['wrong token', sandboxId, 'f'.repeat(64), 'Invalid sandbox token.'],
      ['empty token', sandboxId, '', 'Sandbox token is missing.'],
      ['unknown id', '0'.repeat(32), sandboxToken, `Sandbox not found: ${'0'.repeat(32)}`],
      ['in use', sandboxId, sandboxToken, `Sandbox ${sandboxId} is in use by another connection.`],
    ];
    for (const [name, id, token, message] of cases) {
      const err = await rejection(Sandbox.attach(server.url, id, token));
      expect(err, name).toBeInstanceOf(SandboxAttachError);
      expect(err.message, name).toBe(message);
    }
    // The holder was not disturbed by any of them.
    const proc = await holder.exec('bash', 'echo mine');
    expect(await proc.stdout.readAll()).toBe('mine\n');
    await holder.kill();
  });

  it('restore of a corrupt checkpoint fails with RESTORE_ERROR', async () => {
    const sandbox = await create(server, { enableSandboxCheckpoint: true });
    await (await sandbox.exec('bash', 'head -c 200000 /dev/urandom > /root/data')).wait();
    const { sandboxId, sandboxToken } = sandbox.info;
    await sandbox.checkpoint();
    const dir = join(server.stateDir, 'checkpoints', sandboxId);
    let damaged = 0;
    const walk = (d: string): void => {
      for (const name of readdirSync(d)) {
        const path = join(d, name);
        const st = statSync(path);
        if (st.isDirectory()) walk(path);
        else if (name !== 'meta.json' && st.size > 0) {
          truncateSync(path, Math.floor(st.size / 2));
          damaged++;
        }
      }
    };
    walk(dir);
    expect(damaged).toBeGreaterThan(0);
    const err = await rejection(Sandbox.attach(server.url, sandboxId, sandboxToken));
    expect(err).toBeInstanceOf(SandboxAttachError);
    expect(err.status).toBe('SANDBOX_RESTORE_ERROR');
    expect(err.message).toMatch(/^Failed to restore/);
    expect(server.containers()).not.toContain(sandboxId);
  });

  it('a server that is not there gives a connection error', async () => {
    const err = await rejection(Sandbox.create('ws://127.0.0.1:1'));
    expect(err).toBeInstanceOf(SandboxConnectionError);
    expect(err.message).toContain('ECONNREFUSED');
  });
});

// Message routing and error mapping of Sandbox and SandboxProcess against a
// scripted fake server.

import type { ClientOptions } from 'ws';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  Sandbox,
  SandboxAttachError,
  SandboxCheckpointError,
  SandboxConnectionError,
  SandboxCreationError,
  SandboxError,
  SandboxExecutionError,
  SandboxSnapshotError,
  type CreateOptions,
} from '../../src/index.js';
import { FakeConn, FakeServer } from '../helpers/fake-server.js';

let server: FakeServer;
beforeEach(async () => {
  server = await FakeServer.start();
});
afterEach(async () => {
  await server.stop();
});

/** Creates a sandbox through the fake server's create flow. */
async function created(options: CreateOptions = {}): Promise<{ sandbox: Sandbox; conn: FakeConn; init: Record<string, unknown> }> {
  const pending = Sandbox.create(server.url, options);
  const conn = await server.accept();
  const init = await conn.next();
  conn.created();
  return { sandbox: await pending, conn, init };
}

/** Starts an execution and answers SANDBOX_EXECUTION_RUNNING. */
async function running(sandbox: Sandbox, conn: FakeConn, language = 'bash', code = 'true') {
  const pending = sandbox.exec(language, code);
  const request = await conn.next();
  conn.status('SANDBOX_EXECUTION_RUNNING');
  return { proc: await pending, request };
}

describe('create', () => {
  it('sends the init message with upstream defaults and resolves on RUNNING', async () => {
    const { sandbox, conn, init } = await created();
    expect(conn.path).toBe('/create');
    expect(init).toEqual({ idle_timeout: 60, enable_checkpoint: false, enable_sandbox_handoff: false, enable_idle_timeout_auto_checkpoint: false });
    expect(sandbox.sandboxId).toBe('a'.repeat(32));
    expect(sandbox.sandboxToken).toBe('b'.repeat(64));
    expect(sandbox.state).toBe('running');
    expect(sandbox.info).toEqual({
      sandboxId: 'a'.repeat(32),
      sandboxToken: 'b'.repeat(64),
      url: server.url,
      idleTimeout: 60,
      enableSandboxCheckpoint: false,
      enableSandboxHandoff: false,
      enableIdleTimeoutAutoCheckpoint: false,
    });
  });

  it('sends every option it is given', async () => {
    const pending = Sandbox.create(server.url + '/', {
      idleTimeout: null,
      enableSandboxCheckpoint: true,
      enableSandboxHandoff: true,
      enableIdleTimeoutAutoCheckpoint: true,
      filesystemSnapshotName: 'snap',
    });
    const conn = await server.accept();
    expect(conn.path).toBe('/create'); // one trailing slash stripped
    expect(await conn.next()).toEqual({
      idle_timeout: null,
      enable_checkpoint: true,
      enable_sandbox_handoff: true,
      enable_idle_timeout_auto_checkpoint: true,
      filesystem_snapshot_name: 'snap',
    });
    conn.created();
    expect((await pending).info.filesystemSnapshotName).toBe('snap');
  });

  it('passes wsOptions to ws (a ws ClientOptions object fits)', async () => {
    const wsOptions: ClientOptions = { headers: { authorization: 'Bearer x' }, handshakeTimeout: 5000 };
    const seen = new Promise<string | undefined>((resolve) => server.onUpgrade((req) => resolve(req.headers.authorization)));
    const pending = Sandbox.create(server.url, { wsOptions });
    expect(await seen).toBe('Bearer x');
    const conn = await server.accept();
    await conn.next();
    conn.created();
    await pending;
  });

  it('takes an http URL as ws', async () => {
    const pending = Sandbox.create(server.url.replace('ws://', 'http://'));
    const conn = await server.accept();
    await conn.next();
    conn.created();
    await expect(pending).resolves.toBeInstanceOf(Sandbox);
  });

  it('rejects with the server text of a creation error', async () => {
    const pending = Sandbox.create(server.url, { filesystemSnapshotName: 'nope' });
    const conn = await server.accept();
    await conn.next();
    conn.status('SANDBOX_CREATING');
    conn.error('SANDBOX_CREATION_ERROR', "Filesystem snapshot not found: 'nope'.");
    const err = await pending.catch((e) => e);
    expect(err).toBeInstanceOf(SandboxCreationError);
    expect(err).toBeInstanceOf(SandboxError);
    expect(err.message).toBe("Filesystem snapshot not found: 'nope'.");
    expect(err.status).toBe('SANDBOX_CREATION_ERROR');
    expect(await conn.closed).toBe(1000); // the client frees the socket itself
  });

  it('rejects with a connection error when the socket closes before RUNNING', async () => {
    const pending = Sandbox.create(server.url);
    const conn = await server.accept();
    await conn.next();
    conn.close(4000);
    const err = await pending.catch((e) => e);
    expect(err).toBeInstanceOf(SandboxConnectionError);
    expect(err.closeCode).toBe(4000);
    expect(err.message).toContain('code=4000');
  });

  it.each(['ftp://127.0.0.1:1', 'not a url'])('rejects %s with a connection error', async (url) => {
    const err = await Sandbox.create(url).catch((e) => e);
    expect(err).toBeInstanceOf(SandboxConnectionError);
    expect(err.message).toContain(`Cannot connect to ${url}`);
  });

  it('rejects with a connection error when nothing listens', async () => {
    const url = server.url;
    await server.stop();
    const err = await Sandbox.create(url).catch((e) => e);
    expect(err).toBeInstanceOf(SandboxConnectionError);
    expect(err.message).toContain('ECONNREFUSED');
    server = await FakeServer.start();
  });
});

describe('attach', () => {
  it('connects to /attach/{id} with the token and resolves on RUNNING, through a restore', async () => {
    const pending = Sandbox.attach(server.url, 'c'.repeat(32), 'tok/en+');
    const conn = await server.accept();
    expect(conn.path).toBe(`/attach/${'c'.repeat(32)}?sandbox_token=tok%2Fen%2B`);
    conn.status('SANDBOX_RESTORING');
    conn.status('SANDBOX_RUNNING');
    const sandbox = await pending;
    expect(sandbox.sandboxId).toBe('c'.repeat(32));
    expect(sandbox.sandboxToken).toBe('tok/en+');
    expect(sandbox.state).toBe('running');
    expect(conn.received).toEqual([]); // no init message on attach
  });

  it.each([
    ['SANDBOX_NOT_FOUND', 'Sandbox not found.', 1011],
    ['SANDBOX_PERMISSION_DENIAL_ERROR', 'Invalid sandbox token.', 4000],
    ['SANDBOX_IN_USE', 'Sandbox is in use by another connection.', 1011],
    ['SANDBOX_RESTORE_ERROR', 'Restore failed: the image is corrupt.', 4000],
  ])('maps %s to SandboxAttachError with the server text', async (status, message, code) => {
    const pending = Sandbox.attach(server.url, 'c'.repeat(32), 'token', { enableAutoReconnect: true });
    const conn = await server.accept();
    conn.error(status, message);
    conn.close(code);
    const err = await pending.catch((e) => e);
    expect(err).toBeInstanceOf(SandboxAttachError);
    expect(err.message).toBe(message);
    expect(err.status).toBe(status);
  });
});

describe('exec', () => {
  it('routes output and the exit code to the process', async () => {
    const { sandbox, conn } = await created();
    const { proc, request } = await running(sandbox, conn, 'python', 'print(1)');
    expect(request).toEqual({ language: 'python', code: 'print(1)' });
    conn.stdout('héllo ');
    conn.send({ event: 'stderr', data: 'warn\n' });
    conn.stdout('wörld\n');
    conn.status('SANDBOX_EXECUTION_DONE', { exit_code: 3 });
    expect(await proc.stdout.readAll()).toBe('héllo wörld\n');
    expect(await proc.stderr.readAll()).toBe('warn\n');
    expect(await proc.wait()).toBe(3);
    expect(proc.exitCode).toBe(3);
    expect(proc.isDone).toBe(true);
  });

  it('sends execution options and reports why the server ended it', async () => {
    const { sandbox, conn } = await created();
    const pending = sandbox.exec('bash', 'sleep 9', { timeout: 1, env: { A: 'b' }, cwd: '/tmp' });
    expect(await conn.next()).toEqual({ language: 'bash', code: 'sleep 9', timeout: 1, env: { A: 'b' }, cwd: '/tmp' });
    conn.status('SANDBOX_EXECUTION_RUNNING');
    const proc = await pending;
    conn.status('SANDBOX_EXECUTION_DONE', { exit_code: 137, reason: 'timeout' });
    expect(await proc.wait()).toBe(137);
    expect(proc.reason).toBe('timeout');
  });

  it('resolves wait() to null when the server reports no exit code', async () => {
    const { sandbox, conn } = await created();
    const { proc } = await running(sandbox, conn);
    conn.status('SANDBOX_EXECUTION_DONE');
    expect(await proc.wait()).toBeNull();
  });

  it.each([
    ['SANDBOX_EXECUTION_UNSUPPORTED_LANGUAGE_ERROR', "Unsupported language: 'ruby'. Supported languages are: python, bash"],
    ['SANDBOX_EXECUTION_ERROR', 'The execute request has no code.'],
  ])('rejects exec with the server text of %s', async (status, message) => {
    const { sandbox, conn } = await created();
    const pending = sandbox.exec('ruby', 'puts 1');
    await conn.next();
    conn.error(status, message);
    conn.status('SANDBOX_EXECUTION_DONE'); // the refused request's DONE
    const err = await pending.catch((e) => e);
    expect(err).toBeInstanceOf(SandboxExecutionError);
    expect(err.message).toBe(message);
    expect(err.status).toBe(status);

    // A late DONE of the refused request must not end the next execution.
    const next = sandbox.exec('bash', 'echo ok');
    await conn.next();
    conn.status('SANDBOX_EXECUTION_DONE');
    conn.status('SANDBOX_EXECUTION_RUNNING');
    const proc = await next;
    conn.stdout('ok\n');
    conn.status('SANDBOX_EXECUTION_DONE', { exit_code: 0 });
    expect(await proc.stdout.readAll()).toBe('ok\n');
  });

  it('refuses a second execution while one runs', async () => {
    const { sandbox, conn } = await created();
    await running(sandbox, conn);
    await expect(sandbox.exec('bash', 'true')).rejects.toThrow(new SandboxExecutionError('An execution is already in progress.'));
  });

  it('writes stdin, closes it and kills the process', async () => {
    const { sandbox, conn } = await created();
    const { proc } = await running(sandbox, conn);
    proc.writeToStdin('line\n');
    proc.closeStdin();
    expect(await conn.next()).toEqual({ event: 'stdin', data: 'line\n' });
    expect(await conn.next()).toEqual({ action: 'close_stdin' });

    let killed = false;
    const kill = proc.kill().then(() => (killed = true));
    expect(await conn.next()).toEqual({ action: 'kill_process' });
    conn.status('SANDBOX_EXECUTION_FORCE_KILLED');
    conn.stdout('last words'); // handled after FORCE_KILLED, in order
    await new Promise((resolve) => proc.stdout.once('data', resolve));
    expect(killed).toBe(false); // resolved by DONE, which follows FORCE_KILLED
    conn.status('SANDBOX_EXECUTION_DONE', { exit_code: 137, reason: 'killed' });
    await kill;
    expect(proc.reason).toBe('killed');
    expect(() => proc.writeToStdin('x')).toThrow('Process has already completed.');
  });

  it('rejects kill() on a force-kill error and keeps the process', async () => {
    const { sandbox, conn } = await created();
    const { proc } = await running(sandbox, conn);
    const kill = proc.kill();
    await conn.next();
    conn.error('SANDBOX_EXECUTION_FORCE_KILL_ERROR', 'kill failed');
    const err = await kill.catch((e) => e);
    expect(err).toBeInstanceOf(SandboxExecutionError);
    expect(err.message).toBe('kill failed');
    expect(proc.isDone).toBe(false);
  });

  it('ignores frames that are not protocol messages', async () => {
    const { sandbox, conn } = await created();
    const { proc } = await running(sandbox, conn);
    conn.ws.send('not json');
    conn.ws.send(Buffer.from([1, 2, 3]));
    conn.send({ event: 'stdout' }); // no data
    conn.status('SANDBOX_SOMETHING_NEW');
    conn.stdout('fine\n');
    conn.status('SANDBOX_EXECUTION_DONE', { exit_code: 0 });
    expect(await proc.stdout.readAll()).toBe('fine\n');
    expect(sandbox.state).toBe('running');
  });
});

describe('snapshot, checkpoint, kill, close', () => {
  it('resolves and rejects snapshots with the server text', async () => {
    const { sandbox, conn } = await created();
    const ok = sandbox.snapshotFilesystem('s1');
    expect(await conn.next()).toEqual({ action: 'snapshot_filesystem', name: 's1' });
    expect(sandbox.state).toBe('snapshotting');
    conn.status('SANDBOX_FILESYSTEM_SNAPSHOT_CREATING');
    conn.status('SANDBOX_FILESYSTEM_SNAPSHOT_CREATED');
    await ok;
    expect(sandbox.state).toBe('running');

    const bad = sandbox.snapshotFilesystem('../x');
    await conn.next();
    conn.error('SANDBOX_FILESYSTEM_SNAPSHOT_ERROR', 'Invalid snapshot name.');
    const err = await bad.catch((e) => e);
    expect(err).toBeInstanceOf(SandboxSnapshotError);
    expect(err.message).toBe('Invalid snapshot name.');
    expect(sandbox.state).toBe('running');
  });

  it('checkpoints, and does not reconnect after the server closes', async () => {
    const { sandbox, conn } = await created({ enableSandboxCheckpoint: true, enableAutoReconnect: true });
    const closed = new Promise((resolve) => sandbox.once('close', resolve));
    const done = sandbox.checkpoint();
    expect(await conn.next()).toEqual({ action: 'checkpoint' });
    for (const s of ['SANDBOX_CHECKPOINTING', 'SANDBOX_DELETING', 'SANDBOX_DELETED', 'SANDBOX_CHECKPOINTED']) conn.status(s);
    conn.close(1000);
    await done;
    expect(await closed).toBeUndefined(); // an expected close carries no error
    expect(sandbox.state).toBe('checkpointed');
    expect(server.paths).toEqual(['/create']);
  });

  it('rejects a checkpoint during an execution and stays usable', async () => {
    const { sandbox, conn } = await created({ enableSandboxCheckpoint: true });
    const { proc } = await running(sandbox, conn);
    const attempt = sandbox.checkpoint();
    await conn.next();
    conn.status('SANDBOX_CHECKPOINTING');
    conn.error('SANDBOX_EXECUTION_IN_PROGRESS_ERROR', 'Cannot checkpoint while an execution is in progress.');
    const err = await attempt.catch((e) => e);
    expect(err).toBeInstanceOf(SandboxCheckpointError);
    expect(err.message).toBe('Cannot checkpoint while an execution is in progress.');
    expect(sandbox.state).toBe('running');
    expect(proc.isDone).toBe(false); // not routed to the process
    conn.status('SANDBOX_EXECUTION_DONE', { exit_code: 0 });
    expect(await proc.wait()).toBe(0);
  });

  it('rejects a failed checkpoint', async () => {
    const { sandbox, conn } = await created();
    const attempt = sandbox.checkpoint();
    await conn.next();
    conn.error('SANDBOX_CHECKPOINT_ERROR', 'Checkpointing is not enabled for this sandbox: create it with enable_checkpoint.');
    conn.close(4000);
    const err = await attempt.catch((e) => e);
    expect(err).toBeInstanceOf(SandboxCheckpointError);
    expect(err.message).toBe('Checkpointing is not enabled for this sandbox: create it with enable_checkpoint.');
  });

  it('kills the sandbox; a running process learns it', async () => {
    const { sandbox, conn } = await created();
    const { proc } = await running(sandbox, conn);
    const kill = sandbox.kill();
    expect(await conn.next()).toEqual({ action: 'kill_sandbox' });
    conn.status('SANDBOX_KILLING');
    conn.status('SANDBOX_DELETING');
    conn.status('SANDBOX_EXECUTION_DONE', { exit_code: 137, reason: 'sandbox_deleted' });
    conn.status('SANDBOX_DELETED');
    conn.status('SANDBOX_KILLED');
    await kill;
    expect(sandbox.state).toBe('killed');
    expect(proc.reason).toBe('sandbox_deleted');
    expect(await conn.closed).toBe(1000);
    await expect(sandbox.exec('bash', 'true')).rejects.toThrow('Current state: killed');
  });

  it('reports an idle deletion and refuses later work', async () => {
    const { sandbox, conn } = await created();
    const closed = new Promise<Error | undefined>((resolve) => sandbox.once('close', resolve));
    conn.status('SANDBOX_DELETING');
    conn.status('SANDBOX_DELETED');
    const err = await closed; // this client is done with it, and says so
    expect(err).toBeInstanceOf(SandboxError);
    expect(err?.message).toBe('The sandbox was deleted.');
    expect(await conn.closed).toBe(1000); // the client closed the socket
    expect(sandbox.state).toBe('deleted');
    await expect(sandbox.exec('bash', 'true')).rejects.toThrow('Current state: deleted');
    await sandbox.kill(); // nothing to kill
  });

  it('close() detaches without killing, and ends a running process with a connection error', async () => {
    const { sandbox, conn } = await created({ enableAutoReconnect: true });
    const { proc } = await running(sandbox, conn);
    const closed = new Promise((resolve) => sandbox.once('close', resolve));
    await sandbox.close();
    expect(await closed).toBeUndefined();
    expect(await conn.closed).toBe(1000);
    expect(conn.received.slice(1)).toEqual([{ language: 'bash', code: 'true' }]); // no kill sent
    expect(sandbox.state).toBe('closed');
    await expect(proc.wait()).rejects.toBeInstanceOf(SandboxConnectionError);
    await expect(proc.stdout.readAll()).rejects.toBeInstanceOf(SandboxConnectionError);
    expect(server.paths).toEqual(['/create']); // no reconnect
  });

  it('a handoff to another client ends this one without reconnecting', async () => {
    const { sandbox, conn } = await created({ enableSandboxCheckpoint: true, enableSandboxHandoff: true, enableAutoReconnect: true });
    const closed = new Promise((resolve) => sandbox.once('close', resolve));
    for (const s of ['SANDBOX_LOCK_RELEASE_REQUESTED', 'SANDBOX_CHECKPOINTING', 'SANDBOX_CHECKPOINTED']) conn.status(s);
    conn.close(1000);
    await closed;
    expect(sandbox.state).toBe('checkpointed');
    expect(server.paths).toEqual(['/create']);
  });

  it('kill() of a sandbox whose connection was lost attaches with the token and deletes it', async () => {
    const { sandbox, conn } = await created();
    const closed = new Promise((resolve) => sandbox.once('close', resolve));
    conn.drop();
    await closed;
    let closes = 0;
    sandbox.on('close', () => closes++);
    const kill = sandbox.kill();
    const again = await server.accept();
    expect(again.path).toBe(`/attach/${'a'.repeat(32)}?sandbox_token=${'b'.repeat(64)}`);
    again.status('SANDBOX_RUNNING');
    expect(await again.next()).toEqual({ action: 'kill_sandbox' });
    again.status('SANDBOX_KILLED');
    again.close(1000);
    await kill;
    expect(sandbox.state).toBe('killed');
    await sandbox.kill(); // nothing left to do
    expect(server.paths).toHaveLength(2);
    expect(closes).toBe(0); // 'close' was emitted once, before
  });

  it('kill() of a lost sandbox the server no longer has resolves', async () => {
    const { sandbox, conn } = await created();
    conn.drop();
    await new Promise((resolve) => sandbox.once('close', resolve));
    const kill = sandbox.kill();
    const again = await server.accept();
    again.error('SANDBOX_NOT_FOUND', 'Sandbox not found: x');
    again.close(1011);
    await kill;
    expect(sandbox.state).toBe('killed');
  });

  it('operations on a closed sandbox reject (never throw synchronously)', async () => {
    const { sandbox } = await created();
    await sandbox.close();
    for (const op of [() => sandbox.snapshotFilesystem('x'), () => sandbox.checkpoint(), () => sandbox.exec('bash', 'true')]) {
      const result = op();
      expect(result).toBeInstanceOf(Promise);
      await expect(result).rejects.toThrow('Sandbox is not in a running state. Current state: closed');
    }
  });
});

// Auto-reconnect: re-attach with the token, `reconnect` after RUNNING,
// stdin buffered meanwhile, exponential backoff and a give-up limit.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_RECONNECT, Sandbox, SandboxConnectionError, type CreateOptions } from '../../src/index.js';
import { FakeConn, FakeServer } from '../helpers/fake-server.js';

const ID = 'a'.repeat(32);
const TOKEN = 'b'.repeat(64);
const ATTACH = `/attach/${ID}?sandbox_token=${TOKEN}`;
const fast = { initialDelayMs: 5, maxDelayMs: 20 };

let server: FakeServer;
beforeEach(async () => {
  server = await FakeServer.start();
});
afterEach(async () => {
  await server.stop();
});

async function created(options: CreateOptions = {}): Promise<{ sandbox: Sandbox; conn: FakeConn }> {
  const pending = Sandbox.create(server.url, { enableAutoReconnect: true, reconnect: fast, ...options });
  const conn = await server.accept();
  await conn.next();
  conn.created(ID, TOKEN);
  return { sandbox: await pending, conn };
}

describe('backoffDelay', () => {
  const opts = { maxAttempts: 8, initialDelayMs: 100, maxDelayMs: 5000 };
  it.each([
    // attempt, random, expected: half of the capped exponential plus random * half
    [0, 0, 50],
    [0, 1, 100],
    [1, 0.5, 150],
    [3, 1, 800],
    [6, 1, 5000], // 6400 capped
    [20, 0, 2500],
  ])('attempt %i with random %f waits %i ms', (attempt, random, expected) => {
    expect(backoffDelay(attempt, opts, () => random)).toBe(expected);
  });

  it('grows until the cap with the default settings', () => {
    const delays = Array.from({ length: DEFAULT_RECONNECT.maxAttempts }, (_, i) => backoffDelay(i, DEFAULT_RECONNECT, () => 1));
    expect(delays).toEqual([100, 200, 400, 800, 1600, 3200, 5000, 5000]);
  });
});

describe('auto-reconnect', () => {
  it('re-attaches with the token, sends reconnect, then the stdin written meanwhile, and keeps the process', async () => {
    const { sandbox, conn } = await created();
    const pending = sandbox.exec('bash', 'cat');
    await conn.next();
    conn.status('SANDBOX_EXECUTION_RUNNING');
    const proc = await pending;
    conn.stdout('before\n');

    const reconnecting = new Promise((resolve) => sandbox.once('reconnecting', resolve));
    conn.drop();
    await reconnecting;
    expect(sandbox.state).toBe('reconnecting');
    proc.writeToStdin('one\n');
    proc.writeToStdin('two\n');
    proc.closeStdin();
    await expect(sandbox.exec('bash', 'true')).rejects.toBeInstanceOf(Error);

    const again = await server.accept();
    expect(again.path).toBe(ATTACH);
    const reconnected = new Promise((resolve) => sandbox.once('reconnected', resolve));
    again.status('SANDBOX_RUNNING');
    await reconnected;
    expect(await again.next()).toEqual({ action: 'reconnect' });
    expect(await again.next()).toEqual({ event: 'stdin', data: 'one\n' });
    expect(await again.next()).toEqual({ event: 'stdin', data: 'two\n' });
    expect(await again.next()).toEqual({ action: 'close_stdin' });

    // The replay: RUNNING again (with what was dropped), then the rest.
    again.status('SANDBOX_EXECUTION_RUNNING', { dropped_bytes: 7 });
    again.stdout('after\n');
    again.status('SANDBOX_EXECUTION_DONE', { exit_code: 0 });
    expect(await proc.stdout.readAll()).toBe('before\nafter\n');
    expect(await proc.wait()).toBe(0);
    expect(proc.droppedBytes).toBe(7);
    expect(sandbox.state).toBe('running');
  });

  it('skips by offset what a replay repeats of the output it already has', async () => {
    const { sandbox, conn } = await created();
    const pending = sandbox.exec('bash', 'x');
    await conn.next();
    conn.status('SANDBOX_EXECUTION_RUNNING');
    const proc = await pending;
    let out = '';
    proc.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    conn.stdout('né\n', 0); // 4 bytes
    conn.stdout('two\n', 4);
    conn.drop();

    const again = await server.accept();
    again.status('SANDBOX_RUNNING');
    expect(await again.next()).toEqual({ action: 'reconnect' });
    // The server could not know whether the client read 'two': it comes
    // again, merged with what followed, then a chunk it had whole.
    again.status('SANDBOX_EXECUTION_RUNNING');
    again.stdout('two\nthree\n', 4);
    again.stdout('né\n', 0);
    again.stdout('four\n', 14);
    again.status('SANDBOX_EXECUTION_DONE', { exit_code: 0 });
    expect(await proc.wait()).toBe(0);
    expect(out).toBe('né\ntwo\nthree\nfour\n');
  });

  it('retries IN_USE with growing delays and gives up after maxAttempts', async () => {
    const { sandbox, conn } = await created({ reconnect: { maxAttempts: 4, initialDelayMs: 10, maxDelayMs: 30 } });
    const pending = sandbox.exec('bash', 'sleep 9');
    await conn.next();
    conn.status('SANDBOX_EXECUTION_RUNNING');
    const proc = await pending;
    const delays: number[] = [];
    sandbox.on('reconnecting', ({ delayMs }) => delays.push(delayMs));
    const closed = new Promise<Error | undefined>((resolve) => sandbox.once('close', resolve));

    conn.drop();
    for (let i = 0; i < 4; i++) {
      const attempt = await server.accept();
      expect(attempt.path).toBe(ATTACH);
      attempt.error('SANDBOX_IN_USE', 'Sandbox is in use by another connection.');
      attempt.close(1011);
    }
    const err = await closed;
    expect(err).toBeInstanceOf(SandboxConnectionError);
    expect(err?.message).toBe('Could not reconnect after 4 attempts.');
    expect(delays).toHaveLength(4);
    [10, 20, 30, 30].forEach((cap, i) => {
      expect(delays[i]).toBeGreaterThanOrEqual(cap / 2);
      expect(delays[i]).toBeLessThanOrEqual(cap);
    });
    await expect(proc.wait()).rejects.toThrow('Could not reconnect after 4 attempts.');
    expect(sandbox.state).toBe('closed');
    expect(server.paths).toHaveLength(5); // create + 4 attempts, no more
  });

  it('retries while the server is unreachable', async () => {
    const { sandbox, conn } = await created();
    const url = server.url;
    const port = Number(new URL(url).port);
    await server.stop(); // drops the connection and refuses the next ones
    await conn.closed;
    await new Promise((resolve) => sandbox.once('reconnecting', resolve));
    await new Promise((resolve) => sandbox.once('reconnecting', resolve)); // a refused attempt, then another
    server = await FakeServer.start(port).catch(() => FakeServer.start());
    if (server.url !== url) {
      return; // the port was taken meanwhile; the retries above are what this test needs
    }
    const again = await server.accept();
    again.status('SANDBOX_RUNNING');
    await new Promise((resolve) => sandbox.once('reconnected', resolve));
    expect(sandbox.state).toBe('running');
  });

  it.each([
    ['SANDBOX_PERMISSION_DENIAL_ERROR', 'Invalid sandbox token.'],
    ['SANDBOX_NOT_FOUND', 'Sandbox not found.'],
    ['SANDBOX_RESTORE_ERROR', 'Restore failed.'],
  ])('gives up at once on %s', async (status, message) => {
    const { sandbox, conn } = await created();
    const closed = new Promise<Error | undefined>((resolve) => sandbox.once('close', resolve));
    conn.drop();
    const attempt = await server.accept();
    attempt.error(status, message);
    attempt.close(4000);
    const err = await closed;
    expect(err).toBeInstanceOf(SandboxConnectionError);
    expect(err?.message).toBe(message);
    expect((err as SandboxConnectionError).status).toBe(status);
    expect(server.paths).toHaveLength(2);
  });

  it.each(['SANDBOX_ERROR', 'SANDBOX_DELETED', 'SANDBOX_LOCK_RENEWAL_ERROR'])('does not reconnect after %s', async (status) => {
    const { sandbox, conn } = await created();
    const closed = new Promise((resolve) => sandbox.once('close', resolve));
    conn.error(status, 'gone');
    conn.drop();
    await closed;
    expect(server.paths).toEqual(['/create']);
  });

  it('drops a connection that stopped answering pings and re-attaches', async () => {
    const { sandbox, conn } = await created({ heartbeatIntervalMs: 30 });
    const pending = sandbox.exec('bash', 'sleep 9');
    await conn.next();
    conn.status('SANDBOX_EXECUTION_RUNNING');
    const proc = await pending;
    await conn.pinged(2); // answered: the connection stays
    expect(sandbox.state).toBe('running');
    const reconnecting = new Promise((resolve) => sandbox.once('reconnecting', resolve));
    conn.silence();
    await reconnecting;
    expect(await conn.closed).toBe(1006); // dropped by the client, no close frame
    const again = await server.accept();
    expect(again.path).toBe(ATTACH);
    again.status('SANDBOX_RUNNING');
    expect(await again.next()).toEqual({ action: 'reconnect' });
    again.status('SANDBOX_EXECUTION_DONE', { exit_code: 0 });
    expect(await proc.wait()).toBe(0);
  });

  it('keeps a connection that answers pings', async () => {
    const { sandbox, conn } = await created({ heartbeatIntervalMs: 10 });
    await conn.pinged(10);
    expect(sandbox.state).toBe('running');
    expect(server.paths).toEqual(['/create']);
  });

  it('is off by default', async () => {
    const { sandbox, conn } = await created({ enableAutoReconnect: false });
    const closed = new Promise<Error | undefined>((resolve) => sandbox.once('close', resolve));
    conn.drop();
    expect(await closed).toBeInstanceOf(SandboxConnectionError);
    expect(sandbox.state).toBe('closed');
    expect(server.paths).toEqual(['/create']);
  });

  it('a kill written while reconnecting is sent once re-attached', async () => {
    const { sandbox, conn } = await created();
    const reconnecting = new Promise((resolve) => sandbox.once('reconnecting', resolve));
    conn.drop();
    await reconnecting;
    const kill = sandbox.kill();
    const again = await server.accept();
    again.status('SANDBOX_RUNNING');
    expect(await again.next()).toEqual({ action: 'reconnect' });
    expect(await again.next()).toEqual({ action: 'kill_sandbox' });
    again.status('SANDBOX_KILLED');
    again.close(1000);
    await kill;
    expect(sandbox.state).toBe('killed');
  });

  it('close() while reconnecting stops the attempts', async () => {
    const { sandbox, conn } = await created({ reconnect: { initialDelayMs: 200, maxDelayMs: 200 } });
    const reconnecting = new Promise((resolve) => sandbox.once('reconnecting', resolve));
    conn.drop();
    await reconnecting;
    await sandbox.close();
    // An absence: wait past the latest the cancelled attempt would start.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(server.paths).toEqual(['/create']);
    expect(sandbox.state).toBe('closed');
  });
});

// Runs every script in examples/ with node against the real server, as a
// user would after `npm run build`: each must exit 0, print what it
// promises, and leave no sandbox of its own behind.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { missingPrerequisite, TestServer } from '../helpers/server.js';

const skip = missingPrerequisite();
const clientDir = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const exampleTimeoutMs = 60_000;

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

describe.skipIf(skip)('examples against the real server', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await new TestServer().start();
  });

  afterAll(async () => {
    const leaks = await server?.stop();
    expect(leaks).toEqual([]);
  });

  // Runs examples/<name> (cwd clients/js, so '@sandpool/client' resolves to
  // this package's dist) and checks it ended well and killed its sandboxes.
  async function runExample(name: string): Promise<string> {
    requireDist();
    const result = await runNode(join('examples', name), { ...process.env, SANDPOOL_URL: server.url });
    const context = `${name} stdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
    expect(result.signal, context).toBeNull();
    expect(result.code, context).toBe(0);
    expect(result.stderr, context).toBe('');
    await expectNoClaimedSandboxes(context);
    return result.stdout;
  }

  // Sandboxes owned by clients (claimed, executing, ...), from /metrics;
  // warm ones in the pool (warming, ready) are the server's.
  async function expectNoClaimedSandboxes(context: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    let owned: Record<string, number> = {};
    while (Date.now() < deadline) {
      const metrics = await (await fetch(server.url.replace(/^ws/, 'http') + '/metrics')).text();
      owned = {};
      for (const [, state, value] of metrics.matchAll(/^sandpool_sandboxes\{state="(\w+)"\} (\S+)$/gm)) {
        if (!['warming', 'ready'].includes(state!) && Number(value) !== 0) {
          owned[state!] = Number(value);
        }
      }
      if (Object.keys(owned).length === 0) {
        return;
      }
      await new Promise((done) => setTimeout(done, 100));
    }
    expect(owned, `sandboxes left behind; ${context}`).toEqual({});
  }

  it('basic.mjs runs python and bash and reports exit codes', async () => {
    const out = await runExample('basic.mjs');
    expect(out).toMatch(/^sandbox [0-9a-f]{32} is running$/m);
    expect(out).toMatch(/^python stdout: hello from python 3\.\d+\.\d+$/m);
    expect(out).toContain('python stderr: a warning\n');
    expect(out).toContain('python exit code: 0\n');
    expect(out).toContain('bash stdout: hello from bash in /root\n');
    expect(out).toContain('bash exit code: 3\n');
    expect(out).toContain('sandbox killed\n');
  });

  it('streaming.mjs prints output while the process runs', async () => {
    const out = await runExample('streaming.mjs');
    // Lines look like: [+  704 ms] "tick 2"
    const chunks = [...out.matchAll(/^\[\+ *(\d+) ms\] (".*")$/gm)].map(([, ms, text]) => ({ ms: Number(ms), text: JSON.parse(text!) as string }));
    expect(chunks.map((c) => c.text).join('')).toBe('tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n');
    // The ticks are 0.5 s apart: the first arrived long before the last.
    const at = (tick: string) => chunks.find((c) => c.text.includes(tick))!.ms;
    expect(at('tick 5') - at('tick 1')).toBeGreaterThanOrEqual(1500);
    expect(out).toContain('exit code: 0\n');
  });

  it('stdin.mjs writes lines, closes stdin and reads the result', async () => {
    const out = await runExample('stdin.mjs');
    expect(out).toBe('read 4 numbers, sum 10\nexit code: 0\n');
  });

  it('snapshot.mjs reads files back from a sandbox created from a snapshot', async () => {
    const out = await runExample('snapshot.mjs');
    expect(out).toMatch(/^snapshot 'sandpool-example' taken from [0-9a-f]{32}$/m);
    expect(out).toMatch(/^sandbox [0-9a-f]{32} created from 'sandpool-example'$/m);
    expect(out).toContain('/data/note.txt: written before the snapshot\n');
    expect(out).toMatch(/^\/tmp\/stamp: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/m);
  });

  it('reconnect.mjs attaches after close() and survives a cut connection', async () => {
    const out = await runExample('reconnect.mjs');
    expect(out).toMatch(/^detached from [0-9a-f]{32} \(state: closed\)$/m);
    expect(out).toContain('attached again; /root/answer: 42\n');
    expect(out).toMatch(/cutting the connection\nreconnecting: attempt 1 in \d+ ms\n/);
    expect(out).toContain('\nreconnected\n');
    const counts = out.match(/^lines received: (\d+) before the cut, (\d+) while disconnected, (\d+) after reconnecting$/m);
    expect(counts, out).not.toBeNull();
    const [before, during, after] = counts!.slice(1).map(Number);
    expect(before! + during! + after!).toBe(20);
    expect(after).toBeGreaterThan(0);
    expect(out).toContain('exit code: 0\n');
    expect(out).toContain('all 20 lines arrived, in order, none twice\n');
  });
});

// The examples import the built package. `npm run build` (also run by
// `npm pack`'s prepack) empties dist first and writes dist/esm/package.json
// last, so wait for that file rather than fail on a build in progress.
/** The examples import this package's dist/, which `npm run build` makes. */
function requireDist(): void {
  const marker = join(clientDir, 'dist/esm/package.json');
  if (!existsSync(marker)) {
    throw new Error(`${marker} missing: run \`npm run build\` first`);
  }
}

/** Runs a script with this node, in clientDir; kills it after exampleTimeoutMs. */
function runNode(script: string, env: NodeJS.ProcessEnv): Promise<Result> {
  return new Promise((resolveResult, reject) => {
    const child = spawn(process.execPath, [script], { cwd: clientDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), exampleTimeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolveResult({ code, signal, stdout, stderr });
    });
  });
}

// Starts the real sandpool server (real runsc, real rootfs) for one test
// file, on a random loopback port with its own state dir, runsc root and
// config, and removes everything it made, even when the test failed.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
export const serverBinary = process.env.SANDPOOL_BIN ?? join(repoRoot, 'bin/sandpool');
export const runscBinary = process.env.SANDPOOL_RUNSC ?? join(repoRoot, 'bin/runsc');
export const rootfsDir = process.env.SANDPOOL_ROOTFS ?? join(repoRoot, 'build/rootfs');

const startupTimeoutMs = 30_000;
const shutdownTimeoutMs = 15_000;

/**
 * Why integration tests cannot run here, or null when they can. Under
 * CI=true a missing prerequisite is an error, never a skip.
 */
export function missingPrerequisite(): string | null {
  const missing = [serverBinary, runscBinary, join(rootfsDir, '.sandpool/agent')].filter((p) => !existsSync(p));
  let reason: string | null = null;
  if (missing.length > 0) {
    reason = `missing ${missing.join(', ')}: run \`make build deps\` at the repository root`;
  } else if (process.getuid?.() !== 0) {
    reason = 'runsc needs root';
  }
  if (reason && process.env.CI === 'true') {
    throw new Error(`integration prerequisites: ${reason}`);
  }
  return reason;
}

export interface ServerOptions {
  /** Enable filesystem snapshots (default true). */
  snapshots?: boolean;
  /** Enable checkpoints (default true). */
  checkpoints?: boolean;
  /** The server's sandbox cap (default 40). */
  maxSandboxes?: number;
  /** Warm base sandboxes (default 1). */
  warm?: number;
  /** Extra config file lines (YAML). */
  config?: string;
}

/** One running server owned by one test file. */
export class TestServer {
  url = '';
  readonly stateDir: string;
  readonly runscRoot: string;
  private child: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);
  private readonly logLines: string[] = [];

  constructor(private readonly options: ServerOptions = {}) {
    // Not under the OS's private tmp of the test runner: runsc needs a plain path.
    this.stateDir = mkdtempSync(join(tmpdir(), 'sandpool-js-'));
    this.runscRoot = join(this.stateDir, 'runsc');
  }

  /** Starts the server and waits for its "listening" log line. */
  async start(): Promise<this> {
    const { snapshots = true, checkpoints = true, maxSandboxes = 40, warm = 1, config = '' } = this.options;
    const configPath = join(this.stateDir, 'sandpool.yaml');
    writeFileSync(
      configPath,
      [`max_sandboxes: ${maxSandboxes}`, 'create_concurrency: 2', 'pools:', `  - warm: ${warm}`, config].join('\n') + '\n',
    );
    const args = [
      'serve',
      '--config', configPath,
      '--listen', '127.0.0.1:0',
      '--state-dir', this.stateDir,
      '--runsc', runscBinary,
      '--rootfs', rootfsDir,
      '--log-format', 'json',
    ];
    if (snapshots) {
      args.push('--filesystem-snapshot-path', join(this.stateDir, 'snapshots'));
    }
    if (checkpoints) {
      args.push('--checkpoint-path', join(this.stateDir, 'checkpoints'));
    }
    const child = spawn(serverBinary, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((done) => child.on('exit', (code) => done(code)));
    const listening = new Promise<string>((resolveURL, reject) => {
      // zerolog writes to stderr; both streams are kept for diagnostics.
      for (const stream of [child.stdout!, child.stderr!]) {
        createInterface({ input: stream }).on('line', (line) => {
          this.logLines.push(line);
          const addr = listeningAddr(line);
          if (addr) {
            resolveURL(`ws://${addr}`);
          }
        });
      }
      void this.exited.then((code) => reject(new Error(`sandpool exited (${code}) before listening:\n${this.log()}`)));
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`sandpool did not listen within ${startupTimeoutMs} ms:\n${this.log()}`)), startupTimeoutMs);
    });
    try {
      this.url = await Promise.race([listening, timeout]);
    } catch (err) {
      await this.stop();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return this;
  }

  /** Everything the server logged so far. */
  log(): string {
    return this.logLines.join('\n');
  }

  /** Container ids under the server's runsc root. */
  containers(): string[] {
    if (!existsSync(this.runscRoot)) {
      return [];
    }
    const out = execFileSync(runscBinary, ['--root', this.runscRoot, 'list', '-quiet'], { timeout: 20_000 });
    return out.toString().split(/\s+/).filter(Boolean);
  }

  /**
   * Stops the server (SIGTERM, then SIGKILL) and removes whatever it left:
   * containers, processes naming the state dir, mounts, the dir itself.
   * Returns what a graceful stop should not have left behind.
   */
  async stop(): Promise<string[]> {
    const leaks: string[] = [];
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        leaks.push(`sandpool pid ${child.pid} ignored SIGTERM for ${shutdownTimeoutMs} ms`);
        child.kill('SIGKILL');
      }, shutdownTimeoutMs);
      await this.exited;
      clearTimeout(timer);
    }
    try {
      for (const id of this.containers()) {
        leaks.push(`container ${id}`);
        execFileSync(runscBinary, ['--root', this.runscRoot, 'delete', '--force', id], { timeout: 20_000 });
      }
    } catch (err) {
      leaks.push(`runsc cleanup failed: ${String(err)}`);
    }
    for (const pid of processesMentioning(this.stateDir)) {
      leaks.push(`process ${pid}: ${cmdline(pid)}`);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const mount of mountsUnder(this.stateDir)) {
      leaks.push(`mount ${mount}`);
      try {
        execFileSync('umount', ['-l', mount]);
      } catch {
        // reported above
      }
    }
    rmSync(this.stateDir, { recursive: true, force: true });
    return leaks;
  }
}

/** The address of a JSON "listening" log line, or null. */
function listeningAddr(line: string): string | null {
  try {
    const rec = JSON.parse(line);
    return (rec.msg ?? rec.message) === 'listening' && typeof rec.addr === 'string' ? rec.addr : null;
  } catch {
    return null; // not a JSON line
  }
}

/** A process's command line, or '' once it has exited. */
function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
  } catch {
    return '';
  }
}

/** Pids (not ours) whose command line contains needle. */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) {
      continue;
    }
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle)) {
        pids.push(pid);
      }
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** Mount points at or below dir, deepest first. */
function mountsUnder(dir: string): string[] {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((point): point is string => !!point && (point === dir || point.startsWith(dir + '/')));
  return mounts.sort((a, b) => b.length - a.length);
}

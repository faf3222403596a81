// `npm pack` gives a package that a fresh project installs and uses, from
// CommonJS, ESM and TypeScript, against the real server.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { missingPrerequisite, TestServer } from '../helpers/server.js';

const skip = missingPrerequisite();
const clientDir = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const tsc = join(clientDir, 'node_modules/typescript/bin/tsc');

// What a user writes: create, run, read, kill. Prints "<stdout>|<exit code>".
const program = (load: string) => `${load}
const sandbox = await Sandbox.create(process.env.SANDPOOL_URL);
try {
  const proc = await sandbox.exec('python', 'print(6 * 7)');
  const out = await proc.stdout.readAll();
  console.log(out.trim() + '|' + (await proc.wait()));
} finally {
  await sandbox.kill();
}
`;

describe.skipIf(skip)('the npm package', () => {
  let server: TestServer;
  let project: string;

  beforeAll(async () => {
    server = new TestServer();
    await server.start();
    project = mkdtempSync(join(tmpdir(), 'sandpool-pack-'));
  });

  afterAll(async () => {
    if (project) rmSync(project, { recursive: true, force: true });
    expect(await server?.stop()).toEqual([]);
  });

  it('packs, installs into a fresh project and works from require, import and TypeScript', () => {
    const packed = JSON.parse(
      execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', project], { cwd: clientDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }),
    )[0];
    const files: string[] = packed.files.map((f: { path: string }) => f.path);
    for (const want of ['package.json', 'README.md', 'dist/cjs/index.js', 'dist/cjs/index.d.ts', 'dist/esm/index.js', 'dist/esm/index.d.ts']) {
      expect(files).toContain(want);
    }
    expect(files.filter((f) => f.startsWith('test/') || f.startsWith('node_modules/'))).toEqual([]);

    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'fresh', private: true }));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', join(project, packed.filename)], { cwd: project, stdio: 'pipe' });

    const env = { ...process.env, SANDPOOL_URL: server.url };
    writeFileSync(join(project, 'use.cjs'), `(async () => {\n${program("const { Sandbox } = require('@sandpool/client');")}\n})().catch((e) => { console.error(e); process.exit(1); });`);
    writeFileSync(join(project, 'use.mjs'), program("import { Sandbox } from '@sandpool/client';"));
    for (const script of ['use.cjs', 'use.mjs']) {
      expect(execFileSync(process.execPath, [script], { cwd: project, env, encoding: 'utf8' }).trim(), script).toBe('42|0');
    }

    // The declarations resolve for both module systems, and are what the API promises.
    const typed = `
import { Sandbox, SandboxError, SandboxCreationError, type SandboxInfo, type SandboxProcess } from '@sandpool/client';
async function main(): Promise<void> {
  const s: Sandbox = await Sandbox.create('ws://127.0.0.1:8080', { idleTimeout: 30, enableAutoReconnect: true, filesystemSnapshotName: 'x' });
  const p: SandboxProcess = await s.exec('bash', 'true', { timeout: 5, env: { A: 'b' }, cwd: '/tmp' });
  const code: number | null = await p.wait();
  const text: string = await p.stdout.readAll();
  const info: SandboxInfo = s.info;
  const snap: string | undefined = info.filesystemSnapshotName;
  const e: SandboxError = new SandboxCreationError('x');
  void [code, text, snap, e];
  await Sandbox.attach('ws://127.0.0.1:8080', info.sandboxId, info.sandboxToken);
}
void main;
`;
    writeFileSync(join(project, 'typed.mts'), typed);
    writeFileSync(join(project, 'typed.cts'), typed);
    // The README's minimal tsconfig.json; typeRoots only because this
    // project borrows the client's @types/node instead of installing it.
    const tsconfig = {
      compilerOptions: { module: 'nodenext', target: 'es2022', strict: true, types: ['node'], noEmit: true, typeRoots: [join(clientDir, 'node_modules/@types')] },
      files: ['typed.mts', 'typed.cts'],
    };
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify(tsconfig));
    const check = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: project, encoding: 'utf8' });
    expect(check.stdout + check.stderr).toBe('');
    expect(check.status).toBe(0);
  });
});

// Builds dist/cjs (require) and dist/esm (import) with declarations. Each
// gets a package.json naming its module type, so Node and TypeScript read
// the .js and .d.ts files next to it in the right format.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
rmSync('dist', { recursive: true, force: true });
for (const [config, type] of [['tsconfig.cjs.json', 'commonjs'], ['tsconfig.esm.json', 'module']]) {
  execFileSync(process.execPath, [tsc, '-p', config], { stdio: 'inherit' });
  const dir = config === 'tsconfig.cjs.json' ? 'dist/cjs' : 'dist/esm';
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/package.json`, JSON.stringify({ type }) + '\n');
}

// Creates a sandbox, runs python and bash in it, prints their output and
// exit codes, and kills the sandbox.
//
//   SANDPOOL_URL=ws://127.0.0.1:8080 node examples/basic.mjs

import { Sandbox } from '@sandpool/client';

const url = process.env.SANDPOOL_URL ?? 'ws://127.0.0.1:8080';

// Runs one execution to its end: both streams read in full, then the exit code.
async function run(sandbox, language, code) {
  const proc = await sandbox.exec(language, code);
  const [stdout, stderr, exitCode] = await Promise.all([proc.stdout.readAll(), proc.stderr.readAll(), proc.wait()]);
  return { stdout, stderr, exitCode };
}

const sandbox = await Sandbox.create(url);
try {
  console.log(`sandbox ${sandbox.sandboxId} is running`);

  const py = await run(sandbox, 'python', 'import sys, platform\nprint("hello from python", platform.python_version())\nprint("a warning", file=sys.stderr)');
  console.log(`python stdout: ${py.stdout.trimEnd()}`);
  console.log(`python stderr: ${py.stderr.trimEnd()}`);
  console.log(`python exit code: ${py.exitCode}`);

  // A non-zero exit is not an error: wait() just reports it.
  const sh = await run(sandbox, 'bash', 'echo "hello from bash in $(pwd)"; exit 3');
  console.log(`bash stdout: ${sh.stdout.trimEnd()}`);
  console.log(`bash exit code: ${sh.exitCode}`);
} finally {
  // Deletes the sandbox on the server; close() would only detach from it.
  await sandbox.kill();
  console.log('sandbox killed');
}

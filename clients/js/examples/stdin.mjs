// Feeds lines to a python process's stdin, closes stdin so the process sees
// end-of-file, and reads what it printed.
//
//   SANDPOOL_URL=ws://127.0.0.1:8080 node examples/stdin.mjs

import { Sandbox } from '@sandpool/client';

const url = process.env.SANDPOOL_URL ?? 'ws://127.0.0.1:8080';

// Reads stdin to EOF, then sums the numbers it was given.
const code = `
import sys
numbers = [int(line) for line in sys.stdin if line.strip()]
print(f"read {len(numbers)} numbers, sum {sum(numbers)}")
`;

const sandbox = await Sandbox.create(url);
try {
  const proc = await sandbox.exec('python', code);

  // writeToStdin sends raw text: add the newlines yourself.
  for (const n of [1, 2, 3, 4]) {
    proc.writeToStdin(`${n}\n`);
  }
  // Without this, sys.stdin would never end and the process would wait forever.
  proc.closeStdin();

  const [output, exitCode] = await Promise.all([proc.stdout.readAll(), proc.wait()]);
  process.stdout.write(output);
  console.log(`exit code: ${exitCode}`);
  if (exitCode !== 0) {
    throw new Error(`python exited with ${exitCode}`);
  }
} finally {
  await sandbox.kill();
}

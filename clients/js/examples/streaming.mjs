// Prints a process's output chunk by chunk as the server streams it, while
// the process is still running, rather than all at once at its end.
//
//   SANDPOOL_URL=ws://127.0.0.1:8080 node examples/streaming.mjs

import { Sandbox } from '@sandpool/client';

const url = process.env.SANDPOOL_URL ?? 'ws://127.0.0.1:8080';

// Five lines, 0.5 s apart: about 2 s in all.
const code = `
import time
for i in range(1, 6):
    print(f"tick {i}", flush=True)
    if i < 5:
        time.sleep(0.5)
`;

const sandbox = await Sandbox.create(url);
try {
  const started = Date.now();
  const proc = await sandbox.exec('python', code);

  // stdout and stderr are Node Readable streams of UTF-8 text (Buffers).
  // Each chunk is what the process wrote at once, not necessarily a whole
  // line (python's print() writes the text and the newline separately); use
  // node:readline on the stream when you want lines.
  proc.stderr.pipe(process.stderr);
  for await (const chunk of proc.stdout) {
    const ms = String(Date.now() - started).padStart(5);
    console.log(`[+${ms} ms] ${JSON.stringify(chunk.toString())}`);
  }

  const exitCode = await proc.wait();
  console.log(`exit code: ${exitCode}`);
  if (exitCode !== 0) {
    throw new Error(`python exited with ${exitCode}`);
  }
} finally {
  await sandbox.kill();
}

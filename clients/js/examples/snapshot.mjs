// Writes files in one sandbox, saves its filesystem as a named snapshot,
// then starts a second sandbox from that snapshot and reads the files back.
// Needs a server with filesystem snapshots enabled (`make run` has them).
//
//   SANDPOOL_URL=ws://127.0.0.1:8080 node examples/snapshot.mjs

import { Sandbox } from '@sandpool/client';

const url = process.env.SANDPOOL_URL ?? 'ws://127.0.0.1:8080';
// Snapshots live on the server until removed there; taking one under an
// existing name replaces it, so rerunning this example does not pile them up.
const snapshotName = 'sandpool-example';

// Runs one execution to its end and fails on a non-zero exit.
async function run(sandbox, language, code) {
  const proc = await sandbox.exec(language, code);
  const [stdout, stderr, exitCode] = await Promise.all([proc.stdout.readAll(), proc.stderr.readAll(), proc.wait()]);
  if (exitCode !== 0) {
    throw new Error(`${language} exited with ${exitCode}: ${stderr}`);
  }
  return stdout;
}

const source = await Sandbox.create(url);
try {
  await run(source, 'bash', 'mkdir -p /data && echo "written before the snapshot" > /data/note.txt && date -u +%FT%TZ > /tmp/stamp');
  await source.snapshotFilesystem(snapshotName);
  console.log(`snapshot '${snapshotName}' taken from ${source.sandboxId}`);
} finally {
  await source.kill();
}

// The snapshot outlives the sandbox it was taken from.
const copy = await Sandbox.create(url, { filesystemSnapshotName: snapshotName });
try {
  console.log(`sandbox ${copy.sandboxId} created from '${copy.info.filesystemSnapshotName}'`);
  const note = await run(copy, 'bash', 'cat /data/note.txt');
  const stamp = await run(copy, 'python', 'print(open("/tmp/stamp").read().strip())');
  console.log(`/data/note.txt: ${note.trimEnd()}`);
  console.log(`/tmp/stamp: ${stamp.trimEnd()}`);
} finally {
  await copy.kill();
}

// Snapshots live on the server until removed (a rerun replaces this one).
console.log(`remove it with: bin/sandpool snapshots rm ${snapshotName} --filesystem-snapshot-path var/snapshots`);

// Two ways back to a sandbox after its connection ends:
//
// 1. close() detaches on purpose; Sandbox.attach with the id and token
//    takes the same sandbox up again, files and all.
// 2. enableAutoReconnect re-attaches by itself after a network drop and
//    replays the output produced meanwhile. To show a real drop, this
//    script puts its own loopback TCP proxy in front of the server,
//    connects through it, and cuts every connection mid-execution.
//
//   SANDPOOL_URL=ws://127.0.0.1:8080 node examples/reconnect.mjs

import { once } from 'node:events';
import { createServer, connect } from 'node:net';
import { Sandbox } from '@sandpool/client';

const url = process.env.SANDPOOL_URL ?? 'ws://127.0.0.1:8080';

// Runs one execution to its end and returns its stdout.
async function run(sandbox, language, code) {
  const proc = await sandbox.exec(language, code);
  const [stdout] = await Promise.all([proc.stdout.readAll(), proc.wait()]);
  return stdout;
}

async function detachAndAttach() {
  let sandbox = await Sandbox.create(url);
  try {
    await run(sandbox, 'bash', 'echo 42 > /root/answer');
    // info holds what attach needs. The token is a secret: store it as you
    // would a password.
    const { sandboxId, sandboxToken } = sandbox.info;

    // Detach: the sandbox keeps running on the server (its idle timeout,
    // 60 s by default, counts from now). kill() would delete it instead.
    await sandbox.close();
    console.log(`detached from ${sandboxId} (state: ${sandbox.state})`);

    sandbox = await Sandbox.attach(url, sandboxId, sandboxToken);
    const answer = await run(sandbox, 'bash', 'cat /root/answer');
    console.log(`attached again; /root/answer: ${answer.trimEnd()}`);
  } finally {
    await sandbox.kill();
  }
}

// A TCP proxy on a random loopback port that forwards to the server and can
// drop every open connection at once, as a network failure would.
async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  const server = createServer((client) => {
    const upstream = connect(Number(port) || 80, hostname);
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      sockets.add(a);
      a.pipe(b);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        sockets.delete(a);
        b.destroy();
      });
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `ws://127.0.0.1:${server.address().port}`,
    cut: () => sockets.forEach((s) => s.destroy()),
    close: () => {
      sockets.forEach((s) => s.destroy());
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

async function autoReconnect() {
  if (!/^(ws|http):\/\//.test(url)) {
    // The proxy passes TLS through, but the client would then check the
    // certificate against 127.0.0.1.
    console.log('skipping the auto-reconnect part: it needs a ws:// server URL');
    return;
  }
  const proxy = await startProxy(url);
  try {
    const sandbox = await Sandbox.create(proxy.url, {
      enableAutoReconnect: true,
      // Defaults: 8 attempts, 100 ms first delay, doubling up to 5000 ms.
      reconnect: { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 1000 },
    });
    try {
      // Lines received before the cut, while disconnected, and after the
      // re-attach (the server replays what was written meanwhile).
      const counts = { before: 0, disconnected: 0, after: 0 };
      let phase = 'before';
      sandbox.on('reconnecting', ({ attempt, delayMs }) => console.log(`reconnecting: attempt ${attempt} in ${delayMs} ms`));
      sandbox.on('reconnected', () => {
        console.log('reconnected');
        phase = 'after';
      });

      // 20 numbered lines, 0.1 s apart.
      const proc = await sandbox.exec('python', 'import time\nfor i in range(20):\n    print(f"line {i}", flush=True)\n    time.sleep(0.1)');
      let output = '';
      proc.stdout.on('data', (chunk) => {
        const text = chunk.toString();
        output += text;
        counts[phase] += (text.match(/\n/g) ?? []).length;
        if (phase === 'before' && output.includes('line 5\n')) {
          console.log('cutting the connection');
          phase = 'disconnected';
          proxy.cut();
        }
      });

      const exitCode = await proc.wait();
      const lines = output.trimEnd().split('\n');
      const expected = Array.from({ length: 20 }, (_, i) => `line ${i}`);
      console.log(`lines received: ${counts.before} before the cut, ${counts.disconnected} while disconnected, ${counts.after} after reconnecting`);
      console.log(`exit code: ${exitCode}`);
      if (exitCode !== 0 || lines.join() !== expected.join()) {
        throw new Error(`output incomplete or repeated, or a failed run:\n${output}`);
      }
      console.log('all 20 lines arrived, in order, none twice');
    } finally {
      await sandbox.kill();
    }
  } finally {
    await proxy.close();
  }
}

await detachAndAttach();
await autoReconnect();

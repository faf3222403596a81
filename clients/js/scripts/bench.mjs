// Client overhead: the same work through @sandpool/client and through a
// hand-written raw WebSocket exchange, interleaved in one run against one
// server. Prints medians and p99 in ms.
//
//   SANDPOOL_URL=ws://127.0.0.1:8080 BENCH_N=30 node scripts/bench.mjs

import WebSocket from 'ws';
import { Sandbox } from '@sandpool/client';

const url = process.env.SANDPOOL_URL ?? 'ws://127.0.0.1:8080';
const n = Number(process.env.BENCH_N ?? 30);

// Raw: one socket, the protocol by hand. Resolves when pred matches a message.
function raw() {
  const ws = new WebSocket(`${url}/create`);
  const waiters = [];
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    for (const w of waiters.splice(0)) if (!w(msg)) waiters.push(w);
  });
  const until = (pred) => new Promise((resolve) => waiters.push((m) => (pred(m) ? (resolve(m), true) : false)));
  return { ws, until, send: (m) => ws.send(JSON.stringify(m)) };
}

const samples = { 'create-client': [], 'create-raw': [], 'exec-client': [], 'exec-raw': [] };
for (let i = 0; i < n; i++) {
  let t = performance.now();
  const sandbox = await Sandbox.create(url);
  samples['create-client'].push(performance.now() - t);
  t = performance.now();
  const proc = await sandbox.exec('bash', 'echo hi');
  await proc.wait();
  samples['exec-client'].push(performance.now() - t);
  await sandbox.kill();

  t = performance.now();
  const r = raw();
  r.ws.on('open', () => r.send({ idle_timeout: 60 }));
  await r.until((m) => m.status === 'SANDBOX_RUNNING');
  samples['create-raw'].push(performance.now() - t);
  t = performance.now();
  r.send({ language: 'bash', code: 'echo hi' });
  await r.until((m) => m.status === 'SANDBOX_EXECUTION_DONE');
  samples['exec-raw'].push(performance.now() - t);
  r.send({ action: 'kill_sandbox' });
  await r.until((m) => m.status === 'SANDBOX_KILLED');
  r.ws.close();
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
for (const [name, xs] of Object.entries(samples)) {
  console.log(`${name}: p50 ${pct(xs, 50).toFixed(1)} ms p99 ${pct(xs, 99).toFixed(1)} ms (n=${xs.length})`);
}

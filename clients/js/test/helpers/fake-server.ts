// A scripted in-test WebSocket server for unit tests: each accepted
// connection is handed to the test, which reads what the client sent and
// answers with protocol messages.

import type { IncomingMessage } from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';

/** One client connection as the fake server sees it. */
export class FakeConn {
  readonly received: Record<string, unknown>[] = [];
  private waiters: Array<() => void> = [];
  readonly closed: Promise<number>;
  /** Pings received from the client. */
  pings = 0;
  private silent = false;

  constructor(readonly ws: WebSocket, readonly path: string) {
    ws.on('message', (data) => {
      this.received.push(JSON.parse(data.toString()));
      for (const wake of this.waiters.splice(0)) wake();
    });
    // The server answers pings itself (autoPong is off) so that silence()
    // can stop it.
    ws.on('ping', (data) => {
      this.pings++;
      if (!this.silent) ws.pong(data);
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  }

  /** Stops answering pings: the peer falls silent, as behind a dead network path. */
  silence(): void {
    this.silent = true;
  }

  /** Resolves once the client has sent n pings. */
  async pinged(n: number): Promise<void> {
    while (this.pings < n) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** The next client message not yet returned by next(). */
  private cursor = 0;
  async next(): Promise<Record<string, unknown>> {
    while (this.cursor >= this.received.length) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return this.received[this.cursor++];
  }

  send(message: Record<string, unknown>): void {
    this.ws.send(JSON.stringify(message));
  }

  status(status: string, extra: Record<string, unknown> = {}): void {
    this.send({ event: 'status_update', status, ...extra });
  }

  /** An error status as the server sends it: status_update with message, then an error event. */
  error(status: string, message: string): void {
    this.status(status, { message });
    this.send({ event: 'error', message });
  }

  /** An output chunk; with offset, where it starts in the stream, as sandpool says. */
  stdout(data: string, offset?: number): void {
    this.send({ event: 'stdout', data, ...(offset === undefined ? {} : { offset }) });
  }

  /** The create flow: CREATING, sandbox_id, RUNNING. */
  created(id = 'a'.repeat(32), token = 'b'.repeat(64)): void {
    this.status('SANDBOX_CREATING');
    this.send({ event: 'sandbox_id', sandbox_id: id, sandbox_token: token });
    this.status('SANDBOX_RUNNING');
  }

  close(code = 1000): void {
    this.ws.close(code);
  }

  /** Drops the TCP connection without a close frame, as a network failure does. */
  drop(): void {
    this.ws.terminate();
  }
}

/** The fake server: connections arrive in order on accept(). */
export class FakeServer {
  private readonly wss: WebSocketServer;
  private readonly queue: FakeConn[] = [];
  private waiters: Array<() => void> = [];
  readonly paths: string[] = [];

  private constructor(wss: WebSocketServer) {
    this.wss = wss;
    wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
      const conn = new FakeConn(ws, req.url ?? '');
      this.paths.push(conn.path);
      this.queue.push(conn);
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  /** Listens on port (default: a random one) of 127.0.0.1. */
  static async start(port = 0): Promise<FakeServer> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port, autoPong: false });
    await new Promise<void>((resolve, reject) => {
      wss.once('listening', () => resolve());
      wss.once('error', reject);
    });
    return new FakeServer(wss);
  }

  get url(): string {
    const address = this.wss.address();
    return `ws://127.0.0.1:${address && typeof address === 'object' ? address.port : 0}`;
  }

  /** Calls fn with the HTTP request of every later upgrade. */
  onUpgrade(fn: (req: IncomingMessage) => void): void {
    this.wss.on('connection', (_ws: WebSocket, req: IncomingMessage) => fn(req));
  }

  /** The next accepted connection. */
  async accept(): Promise<FakeConn> {
    while (this.queue.length === 0) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return this.queue.shift()!;
  }

  async stop(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

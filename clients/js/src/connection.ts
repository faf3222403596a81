// One WebSocket to the server, JSON in both directions.

import { EventEmitter } from 'node:events';
import WebSocket, { type ClientOptions } from 'ws';
import type { WebSocketMessage, WebSocketOptions } from './types.js';

/** Joins the base URL (one trailing slash stripped, http(s) taken as ws(s)) and a path. */
export function endpoint(base: string, path: string): string {
  const trimmed = base.endsWith('/') ? base.slice(0, -1) : base;
  return trimmed.replace(/^http(s?):\/\//, 'ws$1://') + path;
}

/** Default interval of the client's pings; 0 turns them off. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 10_000;

/**
 * Events: 'open', 'message' (a parsed WebSocketMessage), 'close' (code,
 * reason, error?). 'close' is emitted exactly once, also when the socket
 * never opened; error then says why.
 *
 * A peer that vanished without closing (a dead network path, a frozen
 * proxy) sends nothing more, and TCP alone may not notice for minutes: the
 * connection pings every heartbeatMs and drops the socket (code 1006) when
 * a whole interval passed with neither a pong nor any other frame, so that
 * auto-reconnect can start. Every WebSocket server answers pings.
 */
export class Connection extends EventEmitter {
  private readonly ws: WebSocket;
  private lastError: Error | undefined;
  private closed = false;
  private heartbeat: NodeJS.Timeout | null = null;
  private heardFrom = true;

  constructor(url: string, options?: WebSocketOptions, heartbeatMs = DEFAULT_HEARTBEAT_INTERVAL_MS) {
    super();
    this.ws = new WebSocket(url, options as ClientOptions | undefined);
    this.ws.on('open', () => {
      this.startHeartbeat(heartbeatMs);
      this.emit('open');
    });
    for (const sign of ['ping', 'pong', 'message'] as const) {
      this.ws.on(sign, () => {
        this.heardFrom = true;
      });
    }
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) {
        return; // the protocol is text frames only
      }
      let message: WebSocketMessage;
      try {
        message = JSON.parse(data.toString());
      } catch {
        return;
      }
      if (message && typeof message === 'object' && typeof message.event === 'string') {
        this.emit('message', message);
      }
    });
    this.ws.on('error', (err) => {
      this.lastError = err;
    });
    this.ws.on('close', (code, reason) => {
      this.closed = true;
      if (this.heartbeat) {
        clearInterval(this.heartbeat);
      }
      this.emit('close', code, reason.toString(), this.lastError);
    });
  }

  private startHeartbeat(intervalMs: number): void {
    if (intervalMs <= 0) {
      return;
    }
    this.heartbeat = setInterval(() => {
      if (!this.heardFrom) {
        this.lastError = new Error(`no answer from the server for ${intervalMs} ms`);
        this.ws.terminate();
        return;
      }
      this.heardFrom = false;
      this.ws.ping();
    }, intervalMs);
    // A heartbeat alone must not keep a program alive.
    this.heartbeat.unref();
  }

  /** True while frames can be sent. */
  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends one JSON message; returns false if the socket is not open. */
  send(message: Record<string, unknown>): boolean {
    if (!this.isOpen) {
      return false;
    }
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** Closes the socket (1000 by default); resolves once it is closed. */
  close(code = 1000): Promise<void> {
    if (this.closed) {
      return Promise.resolve();
    }
    const done = new Promise<void>((resolve) => this.once('close', () => resolve()));
    if (this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
    } else {
      this.ws.close(code);
      // A peer that never answers the close frame must not hold us forever.
      const timer = setTimeout(() => this.ws.terminate(), 2000);
      timer.unref();
      done.finally(() => clearTimeout(timer));
    }
    return done;
  }

  /** Drops the socket without a close handshake. */
  terminate(): void {
    this.ws.terminate();
  }
}

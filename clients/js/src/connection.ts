// One WebSocket to the server, JSON in both directions.

import { EventEmitter } from 'node:events';
import WebSocket, { type ClientOptions } from 'ws';
import type { WebSocketMessage, WebSocketOptions } from './types.js';

/** Joins the base URL (one trailing slash stripped, http(s) taken as ws(s)) and a path. */
export function endpoint(base: string, path: string): string {
  const trimmed = base.endsWith('/') ? base.slice(0, -1) : base;
  return trimmed.replace(/^http(s?):\/\//, 'ws$1://') + path;
}

/**
 * Events: 'open', 'message' (a parsed WebSocketMessage), 'close' (code,
 * reason, error?). 'close' is emitted exactly once, also when the socket
 * never opened; error then says why.
 */
export class Connection extends EventEmitter {
  private readonly ws: WebSocket;
  private lastError: Error | undefined;
  private closed = false;

  constructor(url: string, options?: WebSocketOptions) {
    super();
    this.ws = new WebSocket(url, options as ClientOptions | undefined);
    this.ws.on('open', () => this.emit('open'));
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
      this.emit('close', code, reason.toString(), this.lastError);
    });
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

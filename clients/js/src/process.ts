// One execution in a sandbox: its output streams, stdin, kill and exit code.

import { Readable } from 'node:stream';
import { SandboxExecutionError, SandboxError } from './errors.js';
import { EventType, SandboxEvent, type WebSocketMessage } from './types.js';

/** A process's stdout or stderr: a Node Readable of UTF-8 text chunks. */
export class SandboxStream extends Readable {
  private failure: Error | null = null;

  // Push-based: the sandbox's message handler pushes output as it arrives.
  override _read(): void {}

  /** Reads to the end and returns the text; rejects if the process was lost. */
  async readAll(): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const chunk of this) {
      chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    }
    if (this.failure) {
      throw this.failure;
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  /** Ends the stream; readAll then rejects with err when one is given. */
  finish(err?: Error): void {
    if (err) {
      this.failure = err;
    }
    this.push(null);
  }
}

/** Sends one client message; returns false when it could not be sent. */
export type Send = (message: Record<string, unknown>) => void;

type Phase = 'starting' | 'running' | 'done';

/**
 * A running execution. Output arrives on `stdout` and `stderr`; `wait()`
 * resolves to the exit code once the server reports SANDBOX_EXECUTION_DONE.
 */
export class SandboxProcess {
  readonly stdout = new SandboxStream();
  readonly stderr = new SandboxStream();

  private phase: Phase = 'starting';
  private _exitCode: number | null = null;
  private _reason: string | undefined;
  private _droppedBytes = 0;
  // Bytes of each stream received so far, by the server's offsets.
  private readonly received = { stdout: 0, stderr: 0 };
  private failure: Error | null = null;

  private readonly started: Promise<void>;
  private resolveStarted!: () => void;
  private rejectStarted!: (err: Error) => void;
  private readonly done: Promise<void>;
  private resolveDone!: () => void;
  private readonly onEnd: () => void;

  /** @internal Created by Sandbox.exec. */
  constructor(
    private readonly send: Send,
    onEnd: () => void,
  ) {
    this.onEnd = onEnd;
    this.started = new Promise((resolve, reject) => {
      this.resolveStarted = resolve;
      this.rejectStarted = reject;
    });
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    // A start failure is reported by start(); never as an unhandled rejection.
    this.started.catch(() => {});
  }

  /** The exit code once done (128+n for signal n); null before, or if the server did not say. */
  get exitCode(): number | null {
    return this._exitCode;
  }

  /** Why the server ended it, when it did: 'killed', 'timeout' or 'sandbox_deleted'. */
  get reason(): string | undefined {
    return this._reason;
  }

  /** Output bytes the server dropped while no client was attached. */
  get droppedBytes(): number {
    return this._droppedBytes;
  }

  /** True once the execution ended (or was lost). */
  get isDone(): boolean {
    return this.phase === 'done';
  }

  /** @internal Sends the execute request and resolves once the process runs. */
  start(request: Record<string, unknown>): Promise<void> {
    this.send(request);
    return this.started;
  }

  /** @internal Routes one execution message to this process. */
  handleMessage(message: WebSocketMessage): void {
    if (this.phase === 'done') {
      return;
    }
    switch (message.event) {
      case EventType.STDOUT:
      case EventType.STDERR:
        if (this.phase === 'running' && typeof message.data === 'string' && message.data !== '') {
          this.output(message.event === EventType.STDOUT ? 'stdout' : 'stderr', message.data, message.offset);
        }
        return;
      case EventType.STATUS_UPDATE:
        this.handleStatus(message);
        return;
    }
  }

  // After a reconnect the server replays what this client may not have
  // confirmed receiving; the offset says where each chunk starts, so what
  // arrived before the drop is skipped (a server without offsets: all kept).
  private output(stream: 'stdout' | 'stderr', data: string, offset: number | undefined): void {
    let chunk = Buffer.from(data, 'utf8');
    if (typeof offset === 'number') {
      const seen = this.received[stream] - offset;
      if (seen >= chunk.length) {
        return;
      }
      if (seen > 0) {
        chunk = chunk.subarray(seen); // offsets fall between characters
      }
      this.received[stream] = offset + Buffer.byteLength(data, 'utf8');
    }
    this[stream].push(chunk);
  }

  private handleStatus(message: WebSocketMessage): void {
    switch (message.status) {
      case SandboxEvent.SANDBOX_EXECUTION_RUNNING:
        // Also sent again after a reconnect, with what was dropped meanwhile.
        this._droppedBytes += message.dropped_bytes ?? 0;
        if (this.phase === 'starting') {
          this.phase = 'running';
          this.resolveStarted();
        }
        return;
      case SandboxEvent.SANDBOX_EXECUTION_ERROR:
      case SandboxEvent.SANDBOX_EXECUTION_UNSUPPORTED_LANGUAGE_ERROR:
        if (this.phase === 'starting') {
          this.fail(new SandboxExecutionError(message.message ?? String(message.status), { status: message.status }));
        }
        return;
      case SandboxEvent.SANDBOX_EXECUTION_DONE:
        // A DONE before RUNNING belongs to an earlier, refused request.
        if (this.phase === 'running') {
          this._exitCode = typeof message.exit_code === 'number' ? message.exit_code : null;
          this._reason = message.reason;
          this.end(null);
        }
        return;
      case SandboxEvent.SANDBOX_EXECUTION_FORCE_KILLED:
        // DONE follows once the process group is gone.
        return;
      case SandboxEvent.SANDBOX_EXECUTION_FORCE_KILL_ERROR:
        this.killWaiter?.reject(new SandboxExecutionError(message.message ?? String(message.status), { status: message.status }));
        return;
    }
  }

  /** @internal Ends the process without a DONE: the connection or sandbox is gone. */
  fail(err: Error): void {
    if (this.phase === 'done') {
      return;
    }
    if (this.phase === 'starting') {
      this.rejectStarted(err);
    }
    this.end(err);
  }

  private end(err: Error | null): void {
    this.phase = 'done';
    this.failure = err;
    this.stdout.finish(err ?? undefined);
    this.stderr.finish(err ?? undefined);
    this.resolveDone();
    if (err) {
      this.killWaiter?.reject(err);
    } else {
      this.killWaiter?.resolve();
    }
    this.onEnd();
  }

  /**
   * Resolves to the exit code when the execution ends (null if the server
   * does not report codes). Rejects with SandboxConnectionError if the
   * connection was lost for good before the end.
   */
  async wait(): Promise<number | null> {
    await this.done;
    if (this.failure) {
      throw this.failure;
    }
    return this._exitCode;
  }

  /** Writes raw text to the process's stdin (no newline is added). */
  writeToStdin(data: string): void {
    this.ensureRunning();
    this.send({ event: 'stdin', data });
  }

  /** Closes the process's stdin (EOF); a sandpool extension. */
  closeStdin(): void {
    this.ensureRunning();
    this.send({ action: 'close_stdin' });
  }

  private killWaiter: { resolve: () => void; reject: (err: Error) => void } | null = null;
  private killing: Promise<void> | null = null;

  /**
   * Kills the whole process group; resolves once the server reports the
   * end, rejects if the server could not kill it or the connection was lost.
   */
  kill(): Promise<void> {
    if (this.phase === 'done') {
      return Promise.resolve();
    }
    if (!this.killing) {
      this.killing = new Promise<void>((resolve, reject) => {
        this.killWaiter = { resolve, reject };
        this.send({ action: 'kill_process' });
      }).finally(() => {
        this.killing = null;
        this.killWaiter = null;
      });
    }
    return this.killing;
  }

  private ensureRunning(): void {
    if (this.phase === 'done') {
      throw new SandboxError('Process has already completed.');
    }
  }
}

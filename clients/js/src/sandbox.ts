// A sandbox on a sandpool (or cloud-run-sandbox) server, driven over one
// WebSocket at a time, with optional automatic re-attach.

import { EventEmitter } from 'node:events';
import { DEFAULT_RECONNECT, backoffDelay } from './backoff.js';
import { Connection, endpoint } from './connection.js';
import {
  SandboxAttachError,
  SandboxCheckpointError,
  SandboxConnectionError,
  SandboxCreationError,
  SandboxError,
  SandboxExecutionError,
  SandboxSnapshotError,
} from './errors.js';
import { SandboxProcess } from './process.js';
import {
  EventType,
  SandboxEvent,
  type AttachOptions,
  type ConnectOptions,
  type CreateOptions,
  type ExecOptions,
  type Language,
  type ReconnectOptions,
  type SandboxInfo,
  type WebSocketMessage,
} from './types.js';

/**
 * Where a sandbox is in its life on this client:
 * connecting -> (restoring) -> running <-> snapshotting | checkpointing ->
 * checkpointed, running -> reconnecting -> running, running -> killing ->
 * killed, and closed/failed/deleted at the end.
 */
export type SandboxState =
  | 'connecting'
  | 'restoring'
  | 'running'
  | 'reconnecting'
  | 'snapshotting'
  | 'checkpointing'
  | 'checkpointed'
  | 'killing'
  | 'killed'
  | 'deleted'
  | 'closed'
  | 'failed';

// After these the server will not take the sandbox back on this connection's
// behalf, so auto-reconnect stops (protocol: "Clients stop auto-reconnecting on").
const NO_RECONNECT = new Set<string>([
  SandboxEvent.SANDBOX_ERROR,
  SandboxEvent.SANDBOX_NOT_FOUND,
  SandboxEvent.SANDBOX_CREATION_ERROR,
  SandboxEvent.SANDBOX_CHECKPOINT_ERROR,
  SandboxEvent.SANDBOX_RESTORE_ERROR,
  SandboxEvent.SANDBOX_DELETED,
  SandboxEvent.SANDBOX_LOCK_RENEWAL_ERROR,
  SandboxEvent.SANDBOX_PERMISSION_DENIAL_ERROR,
]);

// Attach refusals: errors of Sandbox.attach, and the end of auto-reconnect
// (but IN_USE, which a re-attach retries: the server may not have noticed
// the dropped socket yet).
const ATTACH_REFUSALS = new Set<string>([
  SandboxEvent.SANDBOX_NOT_FOUND,
  SandboxEvent.SANDBOX_PERMISSION_DENIAL_ERROR,
  SandboxEvent.SANDBOX_IN_USE,
  SandboxEvent.SANDBOX_RESTORE_ERROR,
]);

type OpKind = 'start' | 'snapshot' | 'checkpoint' | 'kill';

interface PendingOp {
  kind: OpKind;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * A sandbox. Obtain one with Sandbox.create or Sandbox.attach.
 *
 * Events: 'reconnecting' ({attempt, delayMs}), 'reconnected', and 'close'
 * (error?) once the sandbox is done with on this client.
 */
export class Sandbox extends EventEmitter {
  private conn: Connection | null = null;
  private _state: SandboxState = 'connecting';
  private _sandboxId: string | null = null;
  private _sandboxToken: string | null = null;
  private pending: PendingOp | null = null;
  private active: SandboxProcess | null = null;
  // Process messages (stdin, close_stdin, kill_process) and a kill_sandbox
  // written while reconnecting; sent in order once re-attached.
  private outbox: Record<string, unknown>[] = [];
  private noReconnect = false;
  private userClosed = false;
  private reconnectAttempt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private refusal: SandboxError | null = null;
  // Why the server deleted the sandbox (idle expiry), for 'close'.
  private deletion: SandboxError | null = null;
  private ended = false;
  private readonly reconnectOptions: Required<ReconnectOptions>;

  private constructor(
    private readonly url: string,
    private readonly options: ConnectOptions,
    private readonly createFlags: Omit<SandboxInfo, 'sandboxId' | 'sandboxToken' | 'url'> = {},
  ) {
    super();
    this.reconnectOptions = { ...DEFAULT_RECONNECT, ...stripUndefined(options.reconnect ?? {}) };
  }

  /** Creates a sandbox; resolves once it runs, rejects with SandboxCreationError (the server's text). */
  static create(url: string, options: CreateOptions = {}): Promise<Sandbox> {
    const {
      idleTimeout = 60,
      enableSandboxCheckpoint = false,
      enableSandboxHandoff = false,
      enableIdleTimeoutAutoCheckpoint = false,
      filesystemSnapshotName,
    } = options;
    const sandbox = new Sandbox(url, options, {
      idleTimeout,
      enableSandboxCheckpoint,
      enableSandboxHandoff,
      enableIdleTimeoutAutoCheckpoint,
      filesystemSnapshotName,
    });
    const init: Record<string, unknown> = {
      idle_timeout: idleTimeout,
      enable_checkpoint: enableSandboxCheckpoint,
      enable_sandbox_handoff: enableSandboxHandoff,
      enable_idle_timeout_auto_checkpoint: enableIdleTimeoutAutoCheckpoint,
    };
    if (filesystemSnapshotName !== undefined) {
      init.filesystem_snapshot_name = filesystemSnapshotName;
    }
    return sandbox.start(endpoint(url, '/create'), init);
  }

  /**
   * Attaches to an existing sandbox (restoring it if it was checkpointed);
   * rejects with SandboxAttachError (the server's text) when refused.
   */
  static attach(url: string, sandboxId: string, sandboxToken: string, options: AttachOptions = {}): Promise<Sandbox> {
    const sandbox = new Sandbox(url, options);
    sandbox._sandboxId = sandboxId;
    sandbox._sandboxToken = sandboxToken;
    return sandbox.start(sandbox.attachURL(), null);
  }

  /** The sandbox id, known once created. */
  get sandboxId(): string | null {
    return this._sandboxId;
  }

  /** The secret that lets a client attach; keep it as you would a password. */
  get sandboxToken(): string | null {
    return this._sandboxToken;
  }

  /** Where this client's view of the sandbox is. */
  get state(): SandboxState {
    return this._state;
  }

  /** Everything needed to attach again later, and how it was created. */
  get info(): SandboxInfo {
    return {
      sandboxId: this._sandboxId ?? '',
      sandboxToken: this._sandboxToken ?? '',
      url: this.url,
      ...stripUndefined(this.createFlags),
    };
  }

  /**
   * Runs code and resolves once the process runs. Output streams on the
   * returned process; wait() gives the exit code. One execution at a time.
   */
  async exec(language: Language | string, code: string, opts: ExecOptions = {}): Promise<SandboxProcess> {
    if (this.active) {
      throw new SandboxExecutionError('An execution is already in progress.');
    }
    this.ensureRunning();
    const proc: SandboxProcess = new SandboxProcess(
      (message) => this.sendForProcess(message),
      () => {
        if (this.active === proc) {
          this.active = null;
        }
      },
    );
    this.active = proc;
    await proc.start({ language, code, ...stripUndefined(opts) });
    return proc;
  }

  /** Saves the filesystem as a named snapshot that Sandbox.create can start from. */
  async snapshotFilesystem(name: string): Promise<void> {
    this.ensureRunning();
    return this.operation('snapshot', 'snapshotting', { action: 'snapshot_filesystem', name });
  }

  /**
   * Checkpoints memory, processes and files; the server then closes this
   * connection. Sandbox.attach with the same id and token restores it.
   */
  async checkpoint(): Promise<void> {
    this.ensureRunning();
    return this.operation('checkpoint', 'checkpointing', { action: 'checkpoint' });
  }

  /**
   * Deletes the sandbox on the server and closes the connection. A sandbox
   * this client lost or closed is attached again (with its token) to be
   * deleted; one already gone resolves. A checkpointed sandbox is left as
   * it is (as the upstream client does): attach to it and kill to delete it.
   */
  async kill(): Promise<void> {
    if (this.pending?.kind === 'kill') {
      throw new SandboxError('The sandbox is already being killed.');
    }
    switch (this._state) {
      case 'killed':
        return;
      case 'checkpointed':
      case 'deleted':
        await this.close();
        return;
      case 'closed':
      case 'failed':
        await this.killDetached();
        return;
    }
    this.noReconnect = this._state !== 'reconnecting';
    await this.operation('kill', 'killing', { action: 'kill_sandbox' });
    await this.conn?.close();
  }

  private async killDetached(): Promise<void> {
    this.clearReconnectTimer();
    if (!this._sandboxId || !this._sandboxToken) {
      return; // never created
    }
    const { wsOptions, enableDebug, debugLabel, heartbeatIntervalMs } = this.options;
    let other: Sandbox;
    try {
      other = await Sandbox.attach(this.url, this._sandboxId, this._sandboxToken, { wsOptions, enableDebug, debugLabel, heartbeatIntervalMs });
    } catch (err) {
      if (err instanceof SandboxAttachError && err.status === SandboxEvent.SANDBOX_NOT_FOUND) {
        this._state = 'killed';
        return;
      }
      throw err;
    }
    await other.kill();
    this._state = 'killed';
  }

  /**
   * Closes the connection without killing the sandbox: it keeps running (its
   * idle timeout counting) and Sandbox.attach can take it up again.
   */
  async close(): Promise<void> {
    this.userClosed = true;
    this.clearReconnectTimer();
    if (this.conn) {
      await this.conn.close(1000);
    } else {
      this.finish(null);
    }
  }

  /** Same as close(), without waiting (the upstream client's name). */
  terminate(): void {
    void this.close();
  }

  // --- connection handling ---

  private start(url: string, init: Record<string, unknown> | null): Promise<Sandbox> {
    return new Promise<Sandbox>((resolve, reject) => {
      this.pending = { kind: 'start', resolve: () => resolve(this), reject };
      this.open(url, init);
    });
  }

  private open(url: string, init: Record<string, unknown> | null): void {
    let conn: Connection;
    try {
      conn = new Connection(url, this.options.wsOptions, this.options.heartbeatIntervalMs);
    } catch (err) {
      // ws refuses a malformed URL or a scheme other than ws(s) at once.
      const message = `Cannot connect to ${url}: ${err instanceof Error ? err.message : String(err)}`;
      const error = new SandboxConnectionError(message, { cause: err });
      if (this.pending?.kind === 'start') {
        this.failStart(error);
      } else {
        this.finish(error);
      }
      return;
    }
    this.conn = conn;
    conn.on('open', () => {
      if (init) {
        conn.send(init);
      }
    });
    conn.on('message', (message: WebSocketMessage) => {
      if (conn === this.conn) {
        this.handleMessage(message);
      }
    });
    conn.on('close', (code: number, reason: string, err?: Error) => {
      if (conn === this.conn) {
        this.conn = null;
        this.handleClose(code, reason, err);
      }
    });
  }

  private attachURL(): string {
    const id = encodeURIComponent(this._sandboxId ?? '');
    const token = encodeURIComponent(this._sandboxToken ?? '');
    return endpoint(this.url, `/attach/${id}?sandbox_token=${token}`);
  }

  private handleMessage(message: WebSocketMessage): void {
    const status = message.event === EventType.STATUS_UPDATE ? String(message.status ?? '') : '';
    if (message.event !== EventType.STDOUT && message.event !== EventType.STDERR) {
      this.debug('received', message);
    }
    if (
      message.event === EventType.STDOUT ||
      message.event === EventType.STDERR ||
      (status.startsWith('SANDBOX_EXECUTION_') && status !== SandboxEvent.SANDBOX_EXECUTION_IN_PROGRESS_ERROR)
    ) {
      this.active?.handleMessage(message);
      return;
    }
    if (message.event === EventType.SANDBOX_ID) {
      this._sandboxId = message.sandbox_id ?? null;
      this._sandboxToken = message.sandbox_token ?? null;
      return;
    }
    if (status !== '') {
      this.handleStatus(status as SandboxEvent, message.message ?? status);
    }
  }

  private handleStatus(status: SandboxEvent, text: string): void {
    if (NO_RECONNECT.has(status)) {
      this.noReconnect = true;
    }
    if (this._state === 'reconnecting') {
      this.handleReattachStatus(status, text);
      return;
    }
    switch (status) {
      case SandboxEvent.SANDBOX_RUNNING:
        if (this.pending?.kind === 'start') {
          this._state = 'running';
          this.settle(null);
        }
        return;
      case SandboxEvent.SANDBOX_RESTORING:
        if (this._state === 'connecting') {
          this._state = 'restoring';
        }
        return;
      case SandboxEvent.SANDBOX_CREATION_ERROR:
        this.failStart(new SandboxCreationError(text, { status }));
        return;
      case SandboxEvent.SANDBOX_NOT_FOUND:
      case SandboxEvent.SANDBOX_PERMISSION_DENIAL_ERROR:
      case SandboxEvent.SANDBOX_IN_USE:
      case SandboxEvent.SANDBOX_RESTORE_ERROR:
        this.failStart(new SandboxAttachError(text, { status }));
        return;
      case SandboxEvent.SANDBOX_FILESYSTEM_SNAPSHOT_CREATED:
        this.endOperation('snapshot', 'running', null);
        return;
      case SandboxEvent.SANDBOX_FILESYSTEM_SNAPSHOT_ERROR:
        this.endOperation('snapshot', 'running', new SandboxSnapshotError(text, { status }));
        return;
      case SandboxEvent.SANDBOX_LOCK_RELEASE_REQUESTED:
      case SandboxEvent.SANDBOX_CHECKPOINTING:
        // Also without a checkpoint() of ours: another client took the sandbox over.
        this.noReconnect = true;
        this._state = 'checkpointing';
        return;
      case SandboxEvent.SANDBOX_CHECKPOINTED:
        this._state = 'checkpointed';
        this.settleIf('checkpoint', null);
        return;
      case SandboxEvent.SANDBOX_EXECUTION_IN_PROGRESS_ERROR:
        this.noReconnect = false;
        this.endOperation('checkpoint', 'running', new SandboxCheckpointError(text, { status }));
        return;
      case SandboxEvent.SANDBOX_CHECKPOINT_ERROR:
        this.endOperation('checkpoint', 'failed', new SandboxCheckpointError(text, { status }));
        return;
      case SandboxEvent.SANDBOX_KILLED:
        this._state = 'killed';
        this.settleIf('kill', null);
        return;
      case SandboxEvent.SANDBOX_KILL_ERROR:
        this.endOperation('kill', 'failed', new SandboxError(text, { status }));
        return;
      case SandboxEvent.SANDBOX_DELETED:
        if (this._state === 'running' || this._state === 'snapshotting') {
          // Idle expiry: the server keeps the socket open for clients that
          // would send more; this one is done with the sandbox.
          const deleted = new SandboxError('The sandbox was deleted.', { status });
          this._state = 'deleted';
          this.active?.fail(deleted);
          this.settle(deleted);
          this.deletion = deleted;
          void this.conn?.close();
        }
        return;
      case SandboxEvent.SANDBOX_ERROR:
        this.failStart(new SandboxError(text, { status }));
        this.settle(new SandboxError(text, { status }));
        return;
    }
  }

  // Statuses on a re-attach connection: RUNNING ends the reconnect; a refusal
  // is kept for handleClose, which retries IN_USE and gives up on the rest.
  private handleReattachStatus(status: SandboxEvent, text: string): void {
    if (status === SandboxEvent.SANDBOX_RUNNING && this.conn) {
      this._state = 'running';
      this.reconnectAttempt = 0;
      this.refusal = null;
      this.noReconnect = false;
      // Replays what the running execution wrote while we were away.
      this.conn.send({ action: 'reconnect' });
      const queued = this.outbox;
      this.outbox = [];
      for (const message of queued) {
        this.conn.send(message);
        if (message.action === 'kill_sandbox') {
          this._state = 'killing';
        }
      }
      this.emit('reconnected');
      return;
    }
    if (ATTACH_REFUSALS.has(status)) {
      this.refusal = new SandboxConnectionError(text, { status });
    }
  }

  private handleClose(code: number, reason: string, err?: Error): void {
    this.debug('closed', { code, reason, error: err?.message });
    if (this.pending?.kind === 'start') {
      const what = this._state === 'restoring' ? 'restore' : 'creation or attach';
      const detail = err ? `: ${err.message}` : '';
      this.failStart(new SandboxConnectionError(`Connection closed during ${what}: code=${code}${detail}`, { closeCode: code, cause: err }));
      return;
    }
    if (this._state === 'reconnecting') {
      const refusal = this.refusal;
      this.refusal = null;
      if (refusal && refusal.status !== SandboxEvent.SANDBOX_IN_USE) {
        this.finish(refusal);
      } else {
        this.scheduleReconnect();
      }
      return;
    }
    const resumable = ['running', 'snapshotting'].includes(this._state);
    if (resumable && this.options.enableAutoReconnect && !this.noReconnect && !this.userClosed) {
      this.settle(new SandboxConnectionError(`Connection lost (code=${code}); the operation's result is unknown.`, { closeCode: code }));
      this._state = 'reconnecting';
      this.scheduleReconnect();
      return;
    }
    if (this.deletion) {
      this.finish(this.deletion);
      return;
    }
    // Closed as expected: after close(), kill, a checkpoint or a handoff.
    const expected = this.userClosed || this._state === 'checkpointed' || this._state === 'killed';
    this.finish(expected ? null : new SandboxConnectionError(`The sandbox connection closed: code=${code}`, { closeCode: code, cause: err }));
  }

  private scheduleReconnect(): void {
    if (this.userClosed) {
      this.finish(new SandboxConnectionError('The sandbox connection was closed.'));
      return;
    }
    const { maxAttempts } = this.reconnectOptions;
    if (this.reconnectAttempt >= maxAttempts) {
      this.finish(new SandboxConnectionError(`Could not reconnect after ${maxAttempts} attempts.`));
      return;
    }
    const delayMs = backoffDelay(this.reconnectAttempt, this.reconnectOptions);
    this.reconnectAttempt++;
    this.emit('reconnecting', { attempt: this.reconnectAttempt, delayMs });
    this.debug('reconnecting', { attempt: this.reconnectAttempt, delayMs });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.open(this.attachURL(), null);
    }, delayMs);
  }

  // The end of this client's use of the sandbox: every waiter learns it.
  private finish(err: SandboxError | null): void {
    this.clearReconnectTimer();
    if (this.ended) {
      return;
    }
    this.ended = true;
    const endState = ['checkpointed', 'killed', 'deleted', 'failed'].includes(this._state) ? this._state : 'closed';
    this._state = endState;
    const reason = err ?? new SandboxConnectionError('The sandbox connection was closed.');
    this.settle(reason);
    this.active?.fail(reason);
    this.outbox = [];
    this.emit('close', err ?? undefined);
  }

  // --- operations ---

  private operation(kind: OpKind, state: SandboxState, message: Record<string, unknown>): Promise<void> {
    if (this.pending) {
      return Promise.reject(new SandboxError(`Another operation (${this.pending.kind}) is in progress.`));
    }
    return new Promise<void>((resolve, reject) => {
      this.pending = { kind, resolve, reject };
      if (this._state === 'reconnecting' && kind === 'kill') {
        this.outbox.push(message);
        return;
      }
      this._state = state;
      if (!this.conn?.send(message)) {
        this.settle(new SandboxConnectionError('The sandbox is not connected.'));
      }
    });
  }

  private endOperation(kind: OpKind, state: SandboxState, err: SandboxError | null): void {
    if (this.pending?.kind === kind) {
      this._state = state;
      this.settle(err);
    }
  }

  private settleIf(kind: OpKind, err: SandboxError | null): void {
    if (this.pending?.kind === kind) {
      this.settle(err);
    }
  }

  private settle(err: Error | null): void {
    const op = this.pending;
    if (!op) {
      return;
    }
    this.pending = null;
    if (err) {
      op.reject(err);
    } else {
      op.resolve();
    }
  }

  private failStart(err: SandboxError): void {
    if (this.pending?.kind !== 'start') {
      return;
    }
    this._state = 'failed';
    this.settle(err);
    // The server closes too; closing here frees the socket at once.
    void this.conn?.close();
  }

  private sendForProcess(message: Record<string, unknown>): void {
    if (this._state === 'reconnecting') {
      this.outbox.push(message);
      return;
    }
    if (!this.conn?.send(message)) {
      throw new SandboxConnectionError('The sandbox is not connected.');
    }
  }

  private ensureRunning(): void {
    if (this._state === 'reconnecting') {
      throw new SandboxConnectionError('The sandbox is reconnecting; try again once it is back.');
    }
    if (this._state !== 'running') {
      throw new SandboxError(`Sandbox is not in a running state. Current state: ${this._state}`);
    }
  }

  private clearReconnectTimer(): void {
    if (this.reconnectTimer) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
  }

  private debug(what: string, detail: unknown): void {
    if (this.options.enableDebug) {
      console.log(`[${this.options.debugLabel ?? ''}] [DEBUG] ${what}`, detail);
    }
  }
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

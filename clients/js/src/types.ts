// Wire types of the sandpool protocol (docs: ../../README.md, "Protocol"),
// which is cloud-run-sandbox's plus a few additive keys.

import type { Agent } from 'node:http';

/** The `event` key of a server message. */
export enum EventType {
  STATUS_UPDATE = 'status_update',
  SANDBOX_ID = 'sandbox_id',
  STDOUT = 'stdout',
  STDERR = 'stderr',
  ERROR = 'error',
}

/** Every `status` the server sends in a `status_update`. */
export enum SandboxEvent {
  SANDBOX_CREATING = 'SANDBOX_CREATING',
  SANDBOX_RUNNING = 'SANDBOX_RUNNING',
  SANDBOX_CREATION_ERROR = 'SANDBOX_CREATION_ERROR',
  SANDBOX_NOT_FOUND = 'SANDBOX_NOT_FOUND',
  SANDBOX_IN_USE = 'SANDBOX_IN_USE',
  SANDBOX_PERMISSION_DENIAL_ERROR = 'SANDBOX_PERMISSION_DENIAL_ERROR',
  SANDBOX_RESTORING = 'SANDBOX_RESTORING',
  SANDBOX_RESTORE_ERROR = 'SANDBOX_RESTORE_ERROR',
  SANDBOX_DELETING = 'SANDBOX_DELETING',
  SANDBOX_DELETED = 'SANDBOX_DELETED',
  SANDBOX_KILLING = 'SANDBOX_KILLING',
  SANDBOX_KILLED = 'SANDBOX_KILLED',
  SANDBOX_KILL_ERROR = 'SANDBOX_KILL_ERROR',
  SANDBOX_ERROR = 'SANDBOX_ERROR',
  SANDBOX_EXECUTION_RUNNING = 'SANDBOX_EXECUTION_RUNNING',
  SANDBOX_EXECUTION_DONE = 'SANDBOX_EXECUTION_DONE',
  SANDBOX_EXECUTION_ERROR = 'SANDBOX_EXECUTION_ERROR',
  SANDBOX_EXECUTION_UNSUPPORTED_LANGUAGE_ERROR = 'SANDBOX_EXECUTION_UNSUPPORTED_LANGUAGE_ERROR',
  SANDBOX_EXECUTION_FORCE_KILLED = 'SANDBOX_EXECUTION_FORCE_KILLED',
  SANDBOX_EXECUTION_FORCE_KILL_ERROR = 'SANDBOX_EXECUTION_FORCE_KILL_ERROR',
  SANDBOX_STDIN_ERROR = 'SANDBOX_STDIN_ERROR',
  SANDBOX_CHECKPOINTING = 'SANDBOX_CHECKPOINTING',
  SANDBOX_CHECKPOINTED = 'SANDBOX_CHECKPOINTED',
  SANDBOX_CHECKPOINT_ERROR = 'SANDBOX_CHECKPOINT_ERROR',
  SANDBOX_EXECUTION_IN_PROGRESS_ERROR = 'SANDBOX_EXECUTION_IN_PROGRESS_ERROR',
  SANDBOX_FILESYSTEM_SNAPSHOT_CREATING = 'SANDBOX_FILESYSTEM_SNAPSHOT_CREATING',
  SANDBOX_FILESYSTEM_SNAPSHOT_CREATED = 'SANDBOX_FILESYSTEM_SNAPSHOT_CREATED',
  SANDBOX_FILESYSTEM_SNAPSHOT_ERROR = 'SANDBOX_FILESYSTEM_SNAPSHOT_ERROR',
  SANDBOX_LOCK_ACQUIRING = 'SANDBOX_LOCK_ACQUIRING',
  SANDBOX_LOCK_ACQUIRED = 'SANDBOX_LOCK_ACQUIRED',
  SANDBOX_LOCK_RELEASE_REQUESTED = 'SANDBOX_LOCK_RELEASE_REQUESTED',
  SANDBOX_LOCK_RELEASING = 'SANDBOX_LOCK_RELEASING',
  SANDBOX_LOCK_RELEASED = 'SANDBOX_LOCK_RELEASED',
  SANDBOX_LOCK_RENEWAL_ERROR = 'SANDBOX_LOCK_RENEWAL_ERROR',
}

/** A message from the server. Unknown keys are allowed and ignored. */
export interface WebSocketMessage {
  event: EventType | string;
  status?: SandboxEvent | string;
  message?: string;
  sandbox_id?: string;
  sandbox_token?: string;
  data?: string;
  /** sandpool: on SANDBOX_EXECUTION_DONE, the exit code (128+n for signal n). */
  exit_code?: number;
  /** sandpool: on SANDBOX_EXECUTION_DONE when the server ended it: killed, timeout, sandbox_deleted. */
  reason?: string;
  /** sandpool: on SANDBOX_EXECUTION_RUNNING after a reconnect, output dropped while detached. */
  dropped_bytes?: number;
  /** sandpool: on stdout/stderr, where `data` starts in its stream (UTF-8 bytes). */
  offset?: number;
}

/** Languages the server runs. Others are sent as given and refused by the server. */
export type Language = 'python' | 'bash';

/** Per-execution options (sandpool extensions; upstream servers ignore them). */
export interface ExecOptions {
  /** Seconds; the server kills the process group and ends the stream after it. */
  timeout?: number;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory inside the sandbox. */
  cwd?: string;
}

/** Auto-reconnect tuning: exponential backoff with jitter and a give-up limit. */
export interface ReconnectOptions {
  /** Attempts before giving up (default 8). */
  maxAttempts?: number;
  /** Delay before the first attempt in ms (default 100); doubles each attempt. */
  initialDelayMs?: number;
  /** Upper bound of one delay in ms (default 5000). */
  maxDelayMs?: number;
}

/**
 * Options of the underlying `ws` WebSocket: the commonly used part of ws's
 * ClientOptions, restated so that these declarations need no @types/ws.
 * A ws ClientOptions object fits; the object is passed to ws as it is.
 */
export interface WebSocketOptions {
  headers?: Record<string, string>;
  handshakeTimeout?: number;
  maxPayload?: number;
  perMessageDeflate?: boolean | object;
  followRedirects?: boolean;
  maxRedirects?: number;
  origin?: string;
  protocolVersion?: number;
  agent?: Agent;
  family?: number;
  localAddress?: string;
  rejectUnauthorized?: boolean;
  servername?: string;
  ca?: string | Buffer | Array<string | Buffer>;
  cert?: string | Buffer | Array<string | Buffer>;
  key?: string | Buffer | Array<string | Buffer | object>;
}

/** Options shared by create and attach. */
export interface ConnectOptions {
  /** Re-attach with the token after an unexpected close (default false). */
  enableAutoReconnect?: boolean;
  /** Backoff of auto-reconnect. */
  reconnect?: ReconnectOptions;
  /** Log protocol messages (not output) to the console. */
  enableDebug?: boolean;
  /** Prefix of debug lines. */
  debugLabel?: string;
  /** Passed to the `ws` WebSocket constructor (headers, TLS, ...). */
  wsOptions?: WebSocketOptions;
  /**
   * The client pings the server this often (ms, default 10000; 0: never) and
   * drops a connection that answered nothing for a whole interval, which
   * starts auto-reconnect: a dead network path is noticed within two
   * intervals instead of when TCP gives up.
   */
  heartbeatIntervalMs?: number;
}

/** Options of Sandbox.create. */
export interface CreateOptions extends ConnectOptions {
  /** Seconds of inactivity before the server reaps it; 0 or null = never (default 60). */
  idleTimeout?: number | null;
  /** Allow checkpoint() and restore on attach. */
  enableSandboxCheckpoint?: boolean;
  /** Let another client take the sandbox over (checkpoint + restore); needs enableSandboxCheckpoint. */
  enableSandboxHandoff?: boolean;
  /** Checkpoint instead of delete on idle expiry; needs enableSandboxCheckpoint. */
  enableIdleTimeoutAutoCheckpoint?: boolean;
  /** Start from this named filesystem snapshot. */
  filesystemSnapshotName?: string;
}

/** Options of Sandbox.attach. */
export type AttachOptions = ConnectOptions;

/**
 * What identifies a sandbox and how it was created: enough to attach to it
 * again later. Creation flags are undefined on a sandbox obtained by attach.
 */
export interface SandboxInfo {
  sandboxId: string;
  sandboxToken: string;
  url: string;
  idleTimeout?: number | null;
  enableSandboxCheckpoint?: boolean;
  enableSandboxHandoff?: boolean;
  enableIdleTimeoutAutoCheckpoint?: boolean;
  filesystemSnapshotName?: string;
}

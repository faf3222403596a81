// Typed errors: each carries the server's text as its message and the
// status (and close code) that caused it.

/** Details of a SandboxError. */
export interface SandboxErrorDetails {
  /** The server status that caused it, e.g. SANDBOX_CREATION_ERROR. */
  status?: string;
  /** The WebSocket close code, when the connection closed. */
  closeCode?: number;
  /** The underlying error. */
  cause?: unknown;
}

/** Base of every error this client throws or rejects with. */
export class SandboxError extends Error {
  readonly status?: string;
  readonly closeCode?: number;

  constructor(message: string, details: SandboxErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.status = details.status;
    this.closeCode = details.closeCode;
  }
}

/** Sandbox.create failed: the server's creation error, e.g. an unknown snapshot. */
export class SandboxCreationError extends SandboxError {}

/** Sandbox.attach failed: not found, wrong token, in use, or restore error. */
export class SandboxAttachError extends SandboxError {}

/** An execution could not start, or a process operation failed. */
export class SandboxExecutionError extends SandboxError {}

/** snapshotFilesystem failed. */
export class SandboxSnapshotError extends SandboxError {}

/** checkpoint failed, or was refused because an execution runs. */
export class SandboxCheckpointError extends SandboxError {}

/** The connection failed or closed, and auto-reconnect (if enabled) gave up. */
export class SandboxConnectionError extends SandboxError {}

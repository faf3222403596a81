// sandpool's TypeScript client: the cloud-run-sandbox client API, plus exit
// codes, stdin EOF, execution options, typed errors and bounded reconnects.

export { Sandbox, type SandboxState } from './sandbox.js';
export { SandboxProcess, SandboxStream } from './process.js';
export {
  SandboxError,
  SandboxCreationError,
  SandboxAttachError,
  SandboxExecutionError,
  SandboxSnapshotError,
  SandboxCheckpointError,
  SandboxConnectionError,
  type SandboxErrorDetails,
} from './errors.js';
export { backoffDelay, DEFAULT_RECONNECT } from './backoff.js';
export {
  EventType,
  SandboxEvent,
  type WebSocketMessage,
  type Language,
  type WebSocketOptions,
  type ExecOptions,
  type ReconnectOptions,
  type ConnectOptions,
  type CreateOptions,
  type AttachOptions,
  type SandboxInfo,
} from './types.js';

/**
 * What the daemon does with an error that escaped every handler (uncaughtException,
 * unhandledRejection, an 'error' event of its stdout/stderr): it logs it and keeps
 * serving. It never exits for one, whatever the reason:
 *  - Its own output failed (the log file or stdio on a full host filesystem, a closed
 *    pipe): only log lines are lost, and the log's sink keeps and retries them
 *    (log-sink.ts). Logged as a warning, without a stack.
 *  - Anything else is a bug: logged with its stack. Exiting would still be worse than
 *    the one request it broke: it detaches every mount of the pool at once (writers
 *    see ENOTCONN, unsynced writes are lost), while the pool protects its metadata on
 *    its own (a failed commit puts it in fail mode).
 * The handler itself never throws: a throw from an uncaughtException handler ends the
 * process (status 7), which is how a log write on a full disk used to kill the daemon.
 */
import { logger } from '../log.js';

const log = logger('daemon');

/** errno codes of a write that failed because of where it goes, not because of a bug. */
const OUTPUT_ERRNOS = new Set(['ENOSPC', 'EDQUOT', 'EFBIG', 'EIO', 'EPIPE', 'EBADF', 'EAGAIN']);
/** Node's codes for writing into a stream that an earlier failure ended. */
const STREAM_ENDED = new Set(['ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);

/** Install the handlers (once, at daemon start). */
export function keepServingThroughEscapes(): void {
  // Without a listener, a failed write to the daemon's stdio (its log file when detached)
  // is thrown by the stream's EventEmitter.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', (err) => onEscaped('a write to stdout/stderr failed', err));
  process.on('uncaughtException', (err) => onEscaped('uncaught exception', err));
  process.on('unhandledRejection', (reason) => onEscaped('unhandled rejection', reason));
}

/** True for a failed write of output (log, stdio) rather than a bug. */
export function isOutputError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { code, syscall } = err as NodeJS.ErrnoException;
  if (code === undefined) return false;
  return (syscall === 'write' && OUTPUT_ERRNOS.has(code)) || STREAM_ENDED.has(code);
}

function onEscaped(what: string, err: unknown): void {
  try {
    if (isOutputError(err)) {
      const code = (err as NodeJS.ErrnoException).code;
      log.warn({ code }, `${what}: writing the daemon's output failed (${code}); the daemon keeps running`);
    } else {
      log.error({ err }, `${what} (the daemon keeps running)`);
    }
  } catch {
    // Serializing the error itself threw (a throwing getter, say): say so without it.
    try {
      log.error(`${what} (the daemon keeps running; the error could not be logged)`);
    } catch {
      /* nothing may escape from here */
    }
  }
}

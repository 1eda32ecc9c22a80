/**
 * The one translator from errors to FUSE return codes (JuiceFS's habit): a ThinfsError
 * answers with its errno; anything else is a bug or an environment failure we did not
 * expect, so it is logged with its stack and answered with EIO. Nothing thrown below the
 * adapter ever reaches the binding or the daemon's event loop.
 */
import { constants } from 'node:os';
import { ThinfsError } from '../errors.js';
import { toText } from '../fs/index.js';
import { logger } from '../log.js';

const log = logger('fuse');

const EIO = constants.errno.EIO;

/** The negative errno for `err`, raised by operation `op` on `path` (a byte string). */
export function toErrno(err: unknown, op: string, path: string | undefined): number {
  if (err instanceof ThinfsError) return -err.errno;
  // Node's own system errors (a failed pwrite on the data file) carry a negative errno too.
  const errno = (err as { errno?: unknown } | null)?.errno;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof errno === 'number' && errno < 0 && typeof code === 'string' && code in constants.errno) {
    log.warn({ op, path: path === undefined ? undefined : toText(path), err }, 'system error under a FUSE operation');
    return errno;
  }
  log.error({ op, path: path === undefined ? undefined : toText(path), err }, 'unexpected error under a FUSE operation; answering EIO');
  return -EIO;
}

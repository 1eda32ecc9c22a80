/**
 * The one error class of thinfs. Every failure that a caller can act on carries an
 * errno (as Node names them: ENOENT, ENOSPC, ...), the operation and, where there is
 * one, the path or object it concerned — so the FUSE adapter can answer with the errno
 * and the CLI can print one clear line.
 */
import { constants } from 'node:os';

export type ErrnoCode = keyof typeof constants.errno;

export class ThinfsError extends Error {
  /** Positive errno number (e.g. 2 for ENOENT). */
  readonly errno: number;

  constructor(
    readonly code: ErrnoCode,
    readonly syscall: string,
    readonly path?: string,
    detail?: string,
  ) {
    super(`${code}: ${detail ?? describe(code)}, ${syscall}${path === undefined ? '' : ` '${path}'`}`);
    this.name = 'ThinfsError';
    this.errno = constants.errno[code];
  }
}

/** Shorthand for `new ThinfsError(...)`, for `throw fail('ENOENT', 'lookup', path)`. */
export function fail(code: ErrnoCode, syscall: string, path?: string, detail?: string): ThinfsError {
  return new ThinfsError(code, syscall, path, detail);
}

/** True when `err` is a ThinfsError with that code (or, given no code, any ThinfsError). */
export function isThinfsError(err: unknown, code?: ErrnoCode): err is ThinfsError {
  return err instanceof ThinfsError && (code === undefined || err.code === code);
}

const DESCRIPTIONS: Partial<Record<ErrnoCode, string>> = {
  ENOENT: 'no such file or directory',
  EEXIST: 'file already exists',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory',
  ENOTEMPTY: 'directory not empty',
  EINVAL: 'invalid argument',
  ENAMETOOLONG: 'file name too long',
  EMLINK: 'too many links',
  EROFS: 'read-only file system',
  ESTALE: 'stale file handle (the file was created after the last commit, which was rolled back)',
  ENOSPC: 'no space left on device',
  EPERM: 'operation not permitted',
  EACCES: 'permission denied',
  EBUSY: 'device or resource busy',
  EFBIG: 'file too large',
  EIO: 'input/output error',
  ENODATA: 'no data available',
  ERANGE: 'result too large',
  EBADF: 'bad file descriptor',
  ENOTSUP: 'operation not supported',
  EXDEV: 'cross-device link',
  ELOOP: 'too many levels of symbolic links',
};

function describe(code: ErrnoCode): string {
  return DESCRIPTIONS[code] ?? code.toLowerCase();
}

/**
 * Sizes and percentages as users type them on the command line.
 *
 * Sizes follow docker's devicemapper options (`dm.basesize=10G`): a number, optionally
 * with a fraction, then an optional unit K, M, G, T, P or E — always powers of 1024, so
 * `64K`, `64KB`, `64KiB` and `65536` are the same — or `B` for bytes. Anything else is
 * refused rather than guessed (the `bytes` package would read `12Q` as 12).
 */
import { fail } from '../errors.js';

const UNITS: Record<string, number> = { '': 1, B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50, E: 2 ** 60 };

const SIZE_RE = /^(\d+(?:\.\d+)?) ?(?:([KMGTPE])(?:I?B)?|(B))?$/;
const PERCENT_RE = /^(\d+(?:\.\d+)?) ?%?$/;

/** What a size looks like, for error messages. */
export const SIZE_HINT = 'expected a size such as 512, 64K, 100G, 10GiB or 1.5T (K, M, G, T are powers of 1024)';

/** Parse a size like `100G`, `64K`, `10GiB`, `1.5T`, `512` into bytes; EINVAL for anything else. */
export function parseSize(text: string): number {
  const m = SIZE_RE.exec(text.trim().toUpperCase());
  if (m === null) throw fail('EINVAL', 'parse size', text, SIZE_HINT);
  const bytes = Number(m[1]) * UNITS[m[2] ?? m[3] ?? '']!;
  if (!Number.isSafeInteger(bytes)) {
    throw fail('EINVAL', 'parse size', text, Number.isInteger(bytes) ? 'size is too large' : 'size is not a whole number of bytes');
  }
  return bytes;
}

/** Parse a percentage like `10%` or `10` (fractions allowed); EINVAL for anything else. */
export function parsePercent(text: string): number {
  const m = PERCENT_RE.exec(text.trim());
  if (m === null) throw fail('EINVAL', 'parse percentage', text, 'expected a percentage such as 10% or 10');
  return Number(m[1]);
}

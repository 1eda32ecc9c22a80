/**
 * Test data and failure capture shared by the pool and filesystem tests: bytes in which a
 * zeroed or shifted range shows, and the errno code a thinfs call fails with.
 */
import { expect } from 'vitest';
import { isThinfsError } from '../../src/errors.js';

/** `len` bytes that are never zero, different per offset and `seed` (a zeroed or misplaced range shows). */
export function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = ((i * 31 + seed) % 255) + 1;
  return b;
}

/** The errno code of the ThinfsError `fn` throws ('no error' when it returns); any other error fails the test. */
export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(isThinfsError(err), `threw ${String(err)}`).toBe(true);
    return (err as { code: string }).code;
  }
  return 'no error';
}

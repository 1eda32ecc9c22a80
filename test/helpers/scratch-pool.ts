/**
 * A scratch pool for the Filesystem tests that open, crash and reopen pools themselves
 * (test/fs/faults.test.ts, test/fs/inodes.test.ts): one fresh directory per test, and
 * after each test, whatever state the test left (a pool closed, in fail mode, or
 * abandoned as by kill -9), every Filesystem opened through it is closed and the pool
 * closed WITHOUT a commit, then the directory removed.
 */
import * as path from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { Filesystem } from '../../src/fs/index.js';
import type { DevId, Pool } from '../../src/pool/index.js';
import { tmpDir } from './tmp.js';

export interface ScratchPool {
  /** Where the pool lives (not made: each test creates its pool with the options it needs). */
  root: string;
  /** The pool the test has open; set it when opening one, closed after the test. */
  pool: Pool | undefined;
  /** Filesystems to close after the test (fsOf adds to it; a test that closes them itself empties it). */
  open: Filesystem[];
  /** Open a Filesystem on device `id` of the open pool, closed after the test. */
  fsOf(id: DevId, opts?: { readOnly?: boolean }): Filesystem;
}

/** Register the per-test set-up and clean-up of a scratch pool (call at the top of a test file). */
export function scratchPool(prefix: string): ScratchPool {
  let t: { dir: string; cleanup: () => void } | undefined;
  const s: ScratchPool = {
    root: '',
    pool: undefined,
    open: [],
    fsOf(id, opts) {
      const f = Filesystem.open(s.pool!, id, opts);
      s.open.push(f);
      return f;
    },
  };
  beforeEach(() => {
    t = tmpDir(prefix);
    s.root = path.join(t.dir, 'pool');
  });
  afterEach(() => {
    for (const f of s.open) {
      try {
        f.close();
      } catch {
        /* the pool is gone, in fail mode, or abandoned by a simulated crash */
      }
    }
    s.open = [];
    try {
      s.pool?.close({ commit: false });
    } catch {
      /* closed by the test */
    }
    s.pool = undefined;
    t?.cleanup();
  });
  return s;
}

/**
 * Scratch pools, one per test, in a fresh directory removed after it:
 *  - scratchPool: for the Filesystem tests that open, crash and reopen pools themselves
 *    (test/fs/faults.test.ts, test/fs/inodes.test.ts). After each test, whatever state
 *    it left (a pool closed, in fail mode, or abandoned as by kill -9), every Filesystem
 *    opened through it is closed and the pool closed WITHOUT a commit.
 *  - freshPool: a pool made before each test and closed after it, for tests that work in
 *    one open pool throughout (the layer import tests).
 */
import * as path from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { Filesystem } from '../../src/fs/index.js';
import { Pool, type DevId, type PoolCreateOptions } from '../../src/pool/index.js';
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

export interface FreshPool {
  /** This test's directory (the pool is in dir/pool); files of the test may go here too. */
  dir: string;
  /** The pool made for this test. */
  pool: Pool;
  /** Run `fn` on a read-only Filesystem of device `id`, closed after it. */
  view<R>(id: DevId, fn: (v: Filesystem) => R): R;
}

/** Register a pool made with `opts` before each test and closed after it (call at the top of a test file). */
export function freshPool(prefix: string, opts: PoolCreateOptions): FreshPool {
  let t: { dir: string; cleanup: () => void } | undefined;
  const s: FreshPool = {
    dir: '',
    pool: undefined as unknown as Pool,
    view(id, fn) {
      const v = Filesystem.open(s.pool, id, { readOnly: true });
      try {
        return fn(v);
      } finally {
        v.close();
      }
    },
  };
  beforeEach(() => {
    t = tmpDir(prefix);
    s.dir = t.dir;
    s.pool = Pool.create(path.join(t.dir, 'pool'), opts);
  });
  afterEach(() => {
    s.pool.close();
    t?.cleanup();
  });
  return s;
}

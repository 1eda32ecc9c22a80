/**
 * fallocate(2) for the pool's data file, through the small addon built from
 * native-deps/native/ by `npm install` (native-deps/build/thinfs_native.node).
 * Node has no fallocate: freed blocks are punched out (PUNCH_HOLE | KEEP_SIZE)
 * so the host gets the space back, as dm-thin's discard passdown does.
 *
 * The addon is found by walking up from this file to the directory holding
 * thinfs's package.json, so the same code works from src/ (vitest) and from
 * dist/src/ (after tsc). It is loaded on first use.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fail, type ErrnoCode } from '../errors.js';

interface NativeAddon {
  punchHole(fd: number, offsetBytes: number, lengthBytes: number): void;
  preallocate(fd: number, offsetBytes: number, lengthBytes: number): void;
  tryLockExclusive(fd: number): boolean;
}

let addon: NativeAddon | undefined;

/** The thinfs project root: the nearest ancestor of `fromDir` whose package.json is named "thinfs". */
function projectRoot(fromDir: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'thinfs') {
      return dir;
    }
    if (dirname(dir) === dir) throw new Error(`thinfs package.json not found above ${fromDir}`);
  }
}

function loadAddon(): NativeAddon {
  if (addon === undefined) {
    const root = projectRoot();
    const file = join(root, 'native-deps', 'build', 'thinfs_native.node');
    if (!existsSync(file)) throw new Error(`${file} is missing: run npm install (or node native-deps/build.cjs)`);
    addon = createRequire(join(root, 'package.json'))(file) as NativeAddon;
  }
  return addon;
}

function call(fn: 'punchHole' | 'preallocate', fd: number, offsetBytes: number, lengthBytes: number): void {
  const native = loadAddon();
  try {
    native[fn](fd, offsetBytes, lengthBytes);
  } catch (err) {
    // The addon throws Node-style errors ("EOPNOTSUPP: Operation not supported, fallocate").
    const code = (err as NodeJS.ErrnoException).code;
    if (code === undefined || !(code in constants.errno)) throw err;
    const reason = (err as Error).message.replace(/^[A-Z0-9]+: |, fallocate$/g, '').toLowerCase();
    throw fail(code as ErrnoCode, 'fallocate', undefined, reason);
  }
}

/**
 * Deallocates [offsetBytes, offsetBytes + lengthBytes) of `fd` without changing its size
 * (reads return zeros); throws a ThinfsError whose code is e.g. EOPNOTSUPP where the file
 * system cannot punch holes.
 */
export function punchHole(fd: number, offsetBytes: number, lengthBytes: number): void {
  call('punchHole', fd, offsetBytes, lengthBytes);
}

/** Reserves disk space for [offsetBytes, offsetBytes + lengthBytes) of `fd` without changing its size. */
export function preallocate(fd: number, offsetBytes: number, lengthBytes: number): void {
  call('preallocate', fd, offsetBytes, lengthBytes);
}

/** flock(LOCK_EX | LOCK_NB) on `fd`: true when this process now holds it, false when another does. */
export function tryLockExclusive(fd: number): boolean {
  return loadAddon().tryLockExclusive(fd);
}

/**
 * The pool's data file: a sparse file of fixed-size blocks. Only this module turns a
 * pool block into a byte offset; everything above speaks PBlocks.
 *
 * Failure contract of each call (the caller decides what the pool does about it):
 *  - pread/pwrite/fdatasync/truncate throw a ThinfsError with the host's errno (ENOSPC
 *    when the host file system under the sparse file is full, EIO for a bad disk).
 *    A pwrite that fails may have written part of its bytes: the caller must treat the
 *    blocks it targeted as holding unknown bytes (fresh blocks go back to the space map
 *    and are never mapped; an own block overwritten in place is as after a crash mid-write).
 *  - punch is best-effort space reclamation: a file system that cannot punch turns it
 *    off for good (warned once); any other failure is logged and the blocks simply keep
 *    their bytes (they are free in the space map either way, nothing reads them).
 *
 * Fault injection: `IoFaults.before(op)` is called before every host I/O call and may
 * throw (tests use it to fail a chosen pwrite, fdatasync or SQLite statement).
 */
import * as fs from 'node:fs';
import { fail, isThinfsError, type ErrnoCode } from '../errors.js';
import { logger } from '../log.js';
import { preallocate, punchHole } from './punch.js';
import type { PBlock } from './types.js';

const log = logger('pool');

/** The host I/O calls a fault plan can fail. */
export type IoOp = 'pread' | 'pwrite' | 'fdatasync' | 'truncate' | 'punch' | 'sql' | 'commit';

/** A fault plan: called before each host I/O call; throwing makes that call fail. */
export interface IoFaults {
  before(op: IoOp): void;
}

/** A Node errno error from the host (or an injected one), as a ThinfsError with the same code. */
export function hostError(err: unknown, syscall: string, file: string): Error {
  if (isThinfsError(err)) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) {
    return fail(code as ErrnoCode, syscall, file, (err as Error).message.replace(/^E[A-Z0-9]+: /, '').replace(/,.*$/, ''));
  }
  return err as Error;
}

export class DataFile {
  private punchSupported = true;

  constructor(
    readonly path: string,
    private fd: number,
    readonly blockSizeBytes: number,
    private readonly faults: IoFaults | undefined,
  ) {}

  /** Blocks the file holds now (its size, in whole blocks). */
  sizeBlocks(): number {
    return Math.floor(fs.fstatSync(this.fd).size / this.blockSizeBytes);
  }

  /** Bytes the sparse file really occupies on the host. */
  onDiskBytes(): number {
    return fs.fstatSync(this.fd).blocks * 512;
  }

  /** Set the file's length to `blocks` blocks. */
  truncateTo(blocks: number): void {
    this.io('truncate', 'ftruncate', () => fs.ftruncateSync(this.fd, blocks * this.blockSizeBytes));
  }

  /** Make every write so far durable (crash rule 1: before the COMMIT that maps it). */
  fdatasync(): void {
    this.io('fdatasync', 'fdatasync', () => fs.fdatasyncSync(this.fd));
  }

  /** Fill `buf` from byte `offset` inside pool block `pb`; past the end of the file reads zeros. */
  readBlock(pb: PBlock, offsetInBlock: number, buf: Uint8Array): void {
    this.preadFully(buf, pb * this.blockSizeBytes + offsetInBlock);
  }

  /** Read consecutive bytes at data-file position `pos` (from readRuns' coalescing). */
  preadFully(buf: Uint8Array, pos: number): void {
    this.io('pread', 'pread', () => {
      let done = 0;
      while (done < buf.byteLength) {
        const n = fs.readSync(this.fd, buf, done, buf.byteLength - done, pos + done);
        if (n === 0) {
          buf.fill(0, done);
          return;
        }
        done += n;
      }
    });
  }

  /** The data-file position of byte `offsetInBlock` of block `pb`. */
  pos(pb: PBlock, offsetInBlock = 0): number {
    return pb * this.blockSizeBytes + offsetInBlock;
  }

  /** Write segments, merging ones that are contiguous in the data file into one writev. */
  pwriteRuns(writes: { pos: number; buf: Uint8Array }[]): void {
    let i = 0;
    while (i < writes.length) {
      const first = writes[i]!;
      const bufs: Uint8Array[] = [first.buf];
      let end = first.pos + first.buf.byteLength;
      let j = i + 1;
      while (j < writes.length && writes[j]!.pos === end && bufs.length < 512) {
        bufs.push(writes[j]!.buf);
        end += writes[j]!.buf.byteLength;
        j++;
      }
      this.io('pwrite', 'pwrite', () => this.writevFully(bufs, first.pos));
      i = j;
    }
  }

  /** Punch pool blocks out of the file (any order); see the contract at the top. */
  punchBlocks(blocks: readonly PBlock[]): void {
    if (blocks.length === 0) return;
    const sorted = [...blocks].sort((a, b) => a - b);
    let start = sorted[0]!;
    let len = 1;
    for (let i = 1; i <= sorted.length; i++) {
      const b = sorted[i];
      if (b !== undefined && b === start + len) {
        len++;
        continue;
      }
      if (b !== undefined && b === start + len - 1) continue; // duplicate
      this.punchRange(start, len);
      if (b !== undefined) {
        start = b;
        len = 1;
      }
    }
  }

  /** Punch blocks [startBlock, startBlock + lenBlocks); best-effort (see the top). */
  punchRange(startBlock: number, lenBlocks: number): void {
    if (lenBlocks <= 0 || !this.punchSupported) return;
    try {
      this.faults?.before('punch');
      punchHole(this.fd, startBlock * this.blockSizeBytes, lenBlocks * this.blockSizeBytes);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'ENOSYS') {
        this.punchSupported = false;
        log.warn({ err }, 'the data file system cannot punch holes: freed space is not returned to the host');
        return;
      }
      log.warn({ err, startBlock, lenBlocks }, 'punching freed blocks failed; they keep their bytes until `thinfs trim`');
    }
  }

  /** Close the file descriptor. */
  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }

  private writevFully(bufs: Uint8Array[], pos: number): void {
    let pending = bufs;
    while (pending.length > 0) {
      let n = pending.length === 1 ? fs.writeSync(this.fd, pending[0]!, 0, pending[0]!.byteLength, pos) : fs.writevSync(this.fd, pending, pos);
      pos += n;
      // Short write: drop what went out and retry the rest.
      const rest: Uint8Array[] = [];
      for (const b of pending) {
        if (n >= b.byteLength) {
          n -= b.byteLength;
        } else {
          rest.push(b.subarray(n));
          n = 0;
        }
      }
      pending = rest;
    }
  }

  private io<T>(op: IoOp, syscall: string, fn: () => T): T {
    try {
      this.faults?.before(op);
      return fn();
    } catch (err) {
      throw hostError(err, syscall, this.path);
    }
  }
}

/**
 * A file of reserved host space beside the metadata (`pool/reserve`). When the host file
 * system fills up, thinfs deletes it, so the commit that follows (the WAL needs room to
 * grow) still succeeds and the pool stays writable for frees; allocations are refused
 * until the reserve can be made again, which proves the host has room once more. Like
 * ext4's reserved blocks, it turns "a full disk corrupts or kills" into "a full disk says
 * ENOSPC".
 */
export class HostReserve {
  private held: boolean;

  constructor(
    private readonly file: string,
    private readonly bytes: number,
  ) {
    this.held = false;
  }

  /** True while the reserve exists (the host had room when it was last made). */
  get present(): boolean {
    return this.held;
  }

  /** Make the reserve; false (and no partial file) when the host has no room. */
  make(): boolean {
    if (this.held) return true;
    let fd = -1;
    try {
      fd = fs.openSync(this.file, 'w', 0o600);
      preallocate(fd, 0, this.bytes);
      fs.fsyncSync(fd);
      this.held = true;
    } catch (err) {
      log.debug({ err }, 'could not make the host space reserve');
      try {
        fs.rmSync(this.file, { force: true });
      } catch {
        /* nothing to undo */
      }
    } finally {
      if (fd >= 0) fs.closeSync(fd);
    }
    return this.held;
  }

  /** Give the reserved space back to the host (it is full). */
  release(): void {
    if (!this.held) return;
    this.held = false;
    try {
      fs.rmSync(this.file, { force: true });
    } catch (err) {
      log.warn({ err }, 'could not release the host space reserve');
    }
  }
}

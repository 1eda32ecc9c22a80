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
  /** A punch failed this session: some free block may hold old bytes. */
  private punchFailed = false;
  /** Every free block was punched when the pool opened (Pool, markFreeBlocksPunched). */
  private freePunched = false;

  constructor(
    readonly path: string,
    private fd: number,
    readonly blockSizeBytes: number,
    private readonly faults: IoFaults | undefined,
  ) {}

  /** The open descriptor (read-write), for a reader or writer outside JS (the FUSE C hot path): never close it. */
  get descriptor(): number {
    return this.fd;
  }

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

  /**
   * Write back dirty pages in the thread pool, so that the synchronous fdatasync of the
   * next commit finds little to do (a commit after 64 MiB of writes held the event loop
   * ~100 ms). Through a descriptor of its own: a writeback error it meets is still
   * reported to the pool's descriptor at the commit (Linux reports an error to every
   * descriptor open when it happened), so crash rule 1 keeps its fdatasync. Best effort.
   */
  async flushAsync(): Promise<void> {
    let fh: fs.promises.FileHandle | undefined;
    try {
      fh = await fs.promises.open(this.path, 'r');
      await fh.datasync();
    } catch {
      /* the commit's fdatasync reports real trouble */
    } finally {
      await fh?.close().catch(() => undefined);
    }
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

  /**
   * True while every block the space map can hand out reads as zeros: all free blocks were
   * punched at open (markFreeBlocksPunched), every punch since succeeded, blocks past the
   * high-water mark are holes (punched at open too). Then a write into a fresh block needs
   * to write only its own bytes.
   */
  get freshBlocksReadZero(): boolean {
    return this.freePunched && this.punchSupported && !this.punchFailed;
  }

  /** The pool punched every free block (at open). */
  markFreeBlocksPunched(): void {
    this.freePunched = !this.punchFailed;
  }

  /** Punch blocks [startBlock, startBlock + lenBlocks); best-effort (see the top). */
  punchRange(startBlock: number, lenBlocks: number): void {
    if (lenBlocks <= 0 || !this.punchSupported) return;
    try {
      this.faults?.before('punch');
      punchHole(this.fd, startBlock * this.blockSizeBytes, lenBlocks * this.blockSizeBytes);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      this.punchFailed = true;
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
 * Host space kept for the metadata log. SQLite appends every commit to the WAL file
 * (pool/metadata.db-wal) and reuses it from the start after each checkpoint; when the
 * host file system fills up, a commit that needs a new WAL block would fail and put the
 * pool in fail mode. So the WAL's first `bytes` are allocated ahead with
 * fallocate(KEEP_SIZE): the blocks belong to the file (nobody else can take them), its
 * size and content do not change (SQLite ignores what lies past its last valid frame).
 * A full host then answers ENOSPC to data writes while commits — and so frees — go on.
 * Like ext4's reserved blocks, it turns "a full disk fails the pool" into "a full disk
 * says ENOSPC". Best-effort: where the file system cannot preallocate, nothing is kept.
 */
export function reserveWalSpace(metadataFile: string, bytes: number): boolean {
  let fd = -1;
  try {
    fd = fs.openSync(`${metadataFile}-wal`, fs.constants.O_RDWR);
    preallocate(fd, 0, bytes);
    return true;
  } catch (err) {
    log.debug({ err }, 'could not preallocate the metadata log');
    return false;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

/**
 * What keeps an inode alive: open handles and the kernel's lookups.
 *
 * An inode whose last name goes stays (nlink 0, an orphan row) while anything holds it,
 * and is destroyed — rows gone, blocks freed — when the last hold goes:
 *  - a HANDLE (open, create, opendir) holds its inode until release;
 *  - a KERNEL REFERENCE holds it while the kernel knows the inode number (FUSE lookup
 *    counts: the adapter calls ref for every entry it hands the kernel, forget when the
 *    kernel forgets). So fstat, read and write through a handle, and getattr by inode
 *    number keep working on a file whose last name is gone.
 * Neither is stored: after a crash nothing holds anything, and the next writable open
 * frees the orphans the crash left (Filesystem.mount).
 */
import { constants } from 'node:fs';
import { fail } from '../errors.js';
import { DirStream } from './dirstream.js';
import { O_ACCMODE } from './mode.js';
import type { Fh, Ino } from './types.js';

export interface Handle {
  ino: Ino;
  readable: boolean;
  writable: boolean;
  append: boolean;
  /** Set on directory handles (opendir): where each readdir offset resumes. */
  stream: DirStream | undefined;
}

export class HandleTable {
  private nextFh = 1;
  private readonly handles = new Map<Fh, Handle>();
  private readonly openCount = new Map<Ino, number>();
  /** Kernel lookup counts (ref/forget). */
  private readonly kernelRefs = new Map<Ino, number>();

  /** A new handle on `ino` with open(2) `flags`; a directory handle when `dir`. */
  open(ino: Ino, flags: number, dir = false): Fh {
    const acc = flags & O_ACCMODE;
    const h: Handle = {
      ino,
      readable: acc === constants.O_RDONLY || acc === constants.O_RDWR,
      writable: acc === constants.O_WRONLY || acc === constants.O_RDWR,
      append: (flags & constants.O_APPEND) !== 0,
      stream: dir ? new DirStream() : undefined,
    };
    const fh = this.nextFh++;
    this.handles.set(fh, h);
    this.openCount.set(ino, (this.openCount.get(ino) ?? 0) + 1);
    return fh;
  }

  /** The handle `fh`; EBADF when it is not open. */
  get(fh: Fh, syscall: string): Handle {
    const h = this.handles.get(fh);
    if (h === undefined) throw fail('EBADF', syscall, `fh ${fh}`);
    return h;
  }

  /** Close `fh`; returns its handle and whether nothing holds its inode any more. */
  close(fh: Fh): { handle: Handle; last: boolean } {
    const handle = this.get(fh, 'release');
    this.handles.delete(fh);
    const n = (this.openCount.get(handle.ino) ?? 1) - 1;
    if (n > 0) this.openCount.set(handle.ino, n);
    else this.openCount.delete(handle.ino);
    return { handle, last: !this.isHeld(handle.ino) };
  }

  /** The kernel took `n` more lookups of `ino`. */
  ref(ino: Ino, n: number): void {
    this.kernelRefs.set(ino, (this.kernelRefs.get(ino) ?? 0) + n);
  }

  /** The kernel forgot `n` lookups of `ino` (at most as many as it took); true when nothing holds it any more. */
  unref(ino: Ino, n: number): boolean {
    const left = (this.kernelRefs.get(ino) ?? 0) - n;
    if (left > 0) this.kernelRefs.set(ino, left);
    else this.kernelRefs.delete(ino);
    return !this.isHeld(ino);
  }

  /** The kernel's lookups of `ino` (0 when it holds none). */
  refs(ino: Ino): number {
    return this.kernelRefs.get(ino) ?? 0;
  }

  /** True while a handle or a kernel lookup holds `ino`. */
  isHeld(ino: Ino): boolean {
    return this.openCount.has(ino) || this.kernelRefs.has(ino);
  }

  /** Every open handle number. */
  list(): Fh[] {
    return [...this.handles.keys()];
  }

  /** Every inode the kernel holds. */
  referenced(): Ino[] {
    return [...this.kernelRefs.keys()];
  }
}

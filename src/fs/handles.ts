/**
 * Open file handles. A handle pins its inode: an inode whose last name goes while a
 * handle is open stays (nlink 0, an orphan) until the last handle is released.
 */
import { constants } from 'node:fs';
import { fail } from '../errors.js';
import { O_ACCMODE } from './mode.js';
import type { Fh, Ino } from './types.js';

export interface Handle {
  ino: Ino;
  readable: boolean;
  writable: boolean;
  append: boolean;
}

export class HandleTable {
  private nextFh = 1;
  private readonly handles = new Map<Fh, Handle>();
  private readonly openCount = new Map<Ino, number>();

  /** A new handle on `ino` with open(2) `flags`. */
  open(ino: Ino, flags: number): Fh {
    const acc = flags & O_ACCMODE;
    const h: Handle = {
      ino,
      readable: acc === constants.O_RDONLY || acc === constants.O_RDWR,
      writable: acc === constants.O_WRONLY || acc === constants.O_RDWR,
      append: (flags & constants.O_APPEND) !== 0,
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

  /** Close `fh`; returns its handle and whether it was the inode's last. */
  close(fh: Fh): { handle: Handle; last: boolean } {
    const handle = this.get(fh, 'release');
    this.handles.delete(fh);
    const n = (this.openCount.get(handle.ino) ?? 1) - 1;
    if (n > 0) this.openCount.set(handle.ino, n);
    else this.openCount.delete(handle.ino);
    return { handle, last: n <= 0 };
  }

  /** True while a handle holds `ino`. */
  isOpen(ino: Ino): boolean {
    return this.openCount.has(ino);
  }

  /** Every open handle number. */
  list(): Fh[] {
    return [...this.handles.keys()];
  }
}

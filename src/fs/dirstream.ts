/**
 * Directory stream offsets (telldir cookies) of one directory handle, for readdirIno and
 * readdirplusIno.
 *
 * A READDIR resumes at an offset an earlier one handed out. Were an offset a position in
 * the listing, an unlink between two calls would shift every later entry down by one and
 * one would be skipped (a create: one shown twice). So an offset names the entry it comes
 * after: the stream remembers, for each offset it handed out, that entry's name, and the
 * listing resumes with the names after it in byte order (the order the directory tables
 * keep, dirents.ts). An entry that exists for the whole listing is shown exactly once,
 * whatever is created or removed meanwhile; one created or removed meanwhile may or may
 * not be shown (as POSIX allows).
 *
 * Offsets: 0 is the start; 1 is after '.'; 2 after '..'; 3, 4, ... after the named entries
 * in the order they were handed out. Offset 0 starts a new pass (rewinddir) and forgets
 * the old offsets; an offset this stream never handed out is the end of the listing.
 */
import type { ByteString } from './bytes.js';

/** Where a listing resumes: how many of '.' and '..' are still to come, then the names after `after` (all when undefined). */
export interface Resume {
  dots: 0 | 1 | 2;
  after: ByteString | undefined;
}

const FIRST_NAMED = 3;

export class DirStream {
  private readonly after = new Map<number, ByteString>();
  private next = FIRST_NAMED;

  /** Where `offset` resumes; undefined when it is past the end (or never handed out). */
  resume(offset: number): Resume | undefined {
    if (!(offset > 0)) {
      this.after.clear();
      this.next = FIRST_NAMED;
      return { dots: 2, after: undefined };
    }
    if (offset === 1) return { dots: 1, after: undefined };
    if (offset === 2) return { dots: 0, after: undefined };
    const name = this.after.get(offset);
    return name === undefined ? undefined : { dots: 0, after: name };
  }

  /** A new offset: the position right after named entry `name`. */
  offsetAfter(name: ByteString): number {
    const offset = this.next++;
    this.after.set(offset, name);
    return offset;
  }
}

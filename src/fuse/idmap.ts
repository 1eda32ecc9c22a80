/**
 * uid/gid maps of a mount, as newuidmap writes them: `C:H:N` maps the N stored
 * (container) ids from C to the host ids from H. Stored ids are shown shifted to host
 * ids; ids that come from the host (chown, the creator of a new file) are shifted back
 * before they are stored. A stored id outside every range shows as the overflow id
 * 65534 (nobody), as in a user namespace; a host id outside every range cannot be
 * stored: chown answers EINVAL and creation EOVERFLOW, as on an idmapped mount.
 */
import { fail } from '../errors.js';

/** One range of a map: `count` ids from `containerId` shown as the ids from `hostId`. */
export interface IdRange {
  containerId: number;
  hostId: number;
  count: number;
}

/** The overflow id shown for stored ids no range maps (the kernel's overflowuid). */
export const OVERFLOW_ID = 65534;

const ID_LIMIT = 2 ** 32 - 1; // (uid_t)-1 is "no change", never an id

/** Parse `C:H:N` (the text of --uid-map/--gid-map); EINVAL with the reason when it is wrong. */
export function parseIdRange(text: string, option = 'id map'): IdRange {
  const m = /^(\d+):(\d+):(\d+)$/.exec(text.trim());
  if (m === null) throw fail('EINVAL', 'mount', undefined, `bad ${option} '${text}': expected CONTAINER:HOST:COUNT, e.g. 0:1000:1`);
  const [containerId, hostId, count] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (count < 1) throw fail('EINVAL', 'mount', undefined, `bad ${option} '${text}': COUNT must be at least 1`);
  if (containerId + count > ID_LIMIT || hostId + count > ID_LIMIT) {
    throw fail('EINVAL', 'mount', undefined, `bad ${option} '${text}': ids must stay below ${ID_LIMIT}`);
  }
  return { containerId, hostId, count };
}

/** A set of ranges; the identity when empty. */
export class IdMap {
  readonly ranges: readonly IdRange[];

  /** EINVAL when two ranges overlap on either side (the map would not be one-to-one). */
  constructor(ranges: readonly IdRange[] = [], option = 'id map') {
    const overlap = (a0: number, b0: number, n: number, m: number) => a0 < b0 + m && b0 < a0 + n;
    for (let i = 0; i < ranges.length; i++) {
      for (let j = i + 1; j < ranges.length; j++) {
        const a = ranges[i]!;
        const b = ranges[j]!;
        if (overlap(a.containerId, b.containerId, a.count, b.count) || overlap(a.hostId, b.hostId, a.count, b.count)) {
          throw fail('EINVAL', 'mount', undefined, `bad ${option}: ranges ${show(a)} and ${show(b)} overlap`);
        }
      }
    }
    this.ranges = ranges.map((r) => ({ ...r }));
  }

  get identity(): boolean {
    return this.ranges.length === 0;
  }

  /** The host id a stored id shows as. */
  toHost(stored: number): number {
    if (this.ranges.length === 0) return stored;
    for (const r of this.ranges) {
      if (stored >= r.containerId && stored < r.containerId + r.count) return r.hostId + (stored - r.containerId);
    }
    return OVERFLOW_ID;
  }

  /** The stored id of a host id, or undefined when no range maps it. */
  toStored(host: number): number | undefined {
    if (this.ranges.length === 0) return host;
    for (const r of this.ranges) {
      if (host >= r.hostId && host < r.hostId + r.count) return r.containerId + (host - r.hostId);
    }
    return undefined;
  }

  /** The ranges as the option text, `C:H:N` each. */
  toStrings(): string[] {
    return this.ranges.map(show);
  }
}

function show(r: IdRange): string {
  return `${r.containerId}:${r.hostId}:${r.count}`;
}

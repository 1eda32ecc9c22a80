/**
 * Device names of snapshots. containerd's keys are arbitrary strings (`default/3/extract-
 * 123-456 sha256:…`, spaces and slashes included) that thinfs device names can't hold, so
 * a snapshot's device is named `snap-` and the first 24 hex digits (96 bits) of the
 * SHA-256 of its key: stable, recomputable from the key, and short. The record (store.ts)
 * is what maps keys to devices; the name only keeps `thinfs ls` readable and tells the
 * snapshotter's devices from everything else in the pool (images, containers, layer
 * devices of `thinfs load`), which Cleanup never touches.
 */
import { createHash } from 'node:crypto';

const PREFIX = 'snap-';
const HEX_DIGITS = 24;

/** The device name of the snapshot keyed `key`. */
export function snapshotDeviceName(key: string): string {
  return `${PREFIX}${createHash('sha256').update(key, 'utf8').digest('hex').slice(0, HEX_DIGITS)}`;
}

/** True for a name `snapshotDeviceName` makes. */
export function isSnapshotDeviceName(name: string): boolean {
  return name.length === PREFIX.length + HEX_DIGITS && name.startsWith(PREFIX) && /^[0-9a-f]+$/.test(name.slice(PREFIX.length));
}

/**
 * What thinfs keeps of containerd's snapshots beside the pool's devices: its own tables in
 * the pool's metadata database (component `snapshots`, numbered migrations), so one commit
 * covers a snapshot's device and its record — after a crash both are there or neither.
 *
 * One row per snapshot: containerd's key (an arbitrary string, `default/3/sha256:…`), its
 * kind (active, view, committed), its parent's key ('' for none), the device holding it, and
 * its times; its labels in a table of their own. Keys and names share one space, as in
 * containerd: a committed snapshot's row carries its name as key (containerd's bolt
 * metastore renames the active bucket the same way on commit).
 *
 * Rows reference their device with ON DELETE CASCADE: a device removed behind our back
 * (`thinfs rm snap-…`) takes its record with it, never leaving a record without a device.
 * Writes happen only inside pool.atomically, so they join the pool's transaction and roll
 * back with the operation. A pool opened read-only is never migrated: before the first
 * write the tables may be missing, which reads as "no snapshots".
 */
import { fail } from '../../errors.js';
import { migrate, type Db, type DevId, type Pool } from '../../pool/index.js';

const COMPONENT = 'snapshots';

/** Numbered migrations of the snapshot tables; step i brings them to version i+1. */
const SNAPSHOT_MIGRATIONS: string[] = [
  `
  CREATE TABLE snap_snapshots (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
    -- The parent's key ('' for none): always a committed snapshot, whose key never changes.
    parent TEXT NOT NULL,
    device_id INTEGER NOT NULL UNIQUE REFERENCES devices(id) ON DELETE CASCADE,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
  );
  CREATE INDEX snap_snapshots_by_parent ON snap_snapshots(parent);
  CREATE TABLE snap_labels (
    key TEXT NOT NULL REFERENCES snap_snapshots(key) ON DELETE CASCADE ON UPDATE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (key, name)
  ) WITHOUT ROWID;
  `,
];

/** containerd's kinds of snapshot (Kind in snapshots.proto, lower case). */
export type SnapshotKind = 'active' | 'view' | 'committed';

/** One snapshot as stored. */
export interface SnapshotRecord {
  key: string;
  kind: SnapshotKind;
  /** The parent's key, '' for none. */
  parent: string;
  deviceId: DevId;
  createdNs: bigint;
  updatedNs: bigint;
  labels: Record<string, string>;
}

interface Row {
  key: string;
  kind: SnapshotKind;
  parent: string;
  device_id: bigint;
  created_ns: bigint;
  updated_ns: bigint;
}

/** True when the pool holds the snapshot tables (refuses a newer schema than this thinfs knows). */
function haveTables(db: Db): boolean {
  const v = db.prepare('SELECT version FROM schema_versions WHERE component = ?').pluck().get(COMPONENT) as number | undefined;
  if (v === undefined) return false;
  if (v > SNAPSHOT_MIGRATIONS.length) {
    throw fail('EINVAL', 'open', COMPONENT, `snapshots schema version ${v} is newer than this thinfs understands; upgrade thinfs`);
  }
  return true;
}

/** Bring the snapshot tables up to date; call before writing (it makes its own operation). */
export function prepareSnapshotTables(pool: Pool): void {
  if (pool.readOnlyOpen) return;
  const db = pool.metadataDb();
  const v = db.prepare('SELECT version FROM schema_versions WHERE component = ?').pluck().get(COMPONENT) as number | undefined;
  if (v === SNAPSHOT_MIGRATIONS.length) return;
  pool.atomically('snapshots: migrate', () => migrate(db, COMPONENT, SNAPSHOT_MIGRATIONS));
}

function labelsOf(db: Db, key: string): Record<string, string> {
  const rows = db.prepare('SELECT name, value FROM snap_labels WHERE key = ? ORDER BY name').all(key) as { name: string; value: string }[];
  return Object.fromEntries(rows.map((r) => [r.name, r.value]));
}

function record(db: Db, r: Row): SnapshotRecord {
  return {
    key: r.key,
    kind: r.kind,
    parent: r.parent,
    deviceId: Number(r.device_id) as DevId,
    createdNs: r.created_ns,
    updatedNs: r.updated_ns,
    labels: labelsOf(db, r.key),
  };
}

/** The snapshot stored under `key`, or undefined. */
export function findSnapshot(pool: Pool, key: string): SnapshotRecord | undefined {
  const db = pool.metadataDb();
  if (!haveTables(db)) return undefined;
  const r = db.prepare('SELECT * FROM snap_snapshots WHERE key = ?').safeIntegers(true).get(key) as Row | undefined;
  return r === undefined ? undefined : record(db, r);
}

/** The snapshot held by device `id`, or undefined. */
export function snapshotOfDevice(pool: Pool, id: DevId): SnapshotRecord | undefined {
  const db = pool.metadataDb();
  if (!haveTables(db)) return undefined;
  const r = db.prepare('SELECT * FROM snap_snapshots WHERE device_id = ?').safeIntegers(true).get(id) as Row | undefined;
  return r === undefined ? undefined : record(db, r);
}

/** Every snapshot, by key. */
export function listSnapshots(pool: Pool): SnapshotRecord[] {
  const db = pool.metadataDb();
  if (!haveTables(db)) return [];
  const rows = db.prepare('SELECT * FROM snap_snapshots ORDER BY key').safeIntegers(true).all() as Row[];
  return rows.map((r) => record(db, r));
}

/** True when some snapshot has `key` as its parent. */
export function hasChildren(pool: Pool, key: string): boolean {
  const db = pool.metadataDb();
  if (!haveTables(db)) return false;
  return db.prepare('SELECT 1 FROM snap_snapshots WHERE parent = ? LIMIT 1').get(key) !== undefined;
}

/** Store a new snapshot. Precondition: inside pool.atomically, tables prepared, `rec.key` free. */
export function insertSnapshot(pool: Pool, rec: SnapshotRecord): void {
  const db = pool.metadataDb();
  db.prepare('INSERT INTO snap_snapshots (key, kind, parent, device_id, created_ns, updated_ns) VALUES (?, ?, ?, ?, ?, ?)').run(
    rec.key,
    rec.kind,
    rec.parent,
    rec.deviceId,
    rec.createdNs,
    rec.updatedNs,
  );
  writeLabels(db, rec.key, rec.labels);
}

/**
 * Turn active snapshot `key` into committed snapshot `name` with `labels` (replacing its
 * own, as containerd does) and times `ns`. Precondition: inside pool.atomically, `name` free.
 */
export function commitSnapshot(pool: Pool, key: string, name: string, labels: Record<string, string>, ns: bigint): void {
  const db = pool.metadataDb();
  db.prepare("UPDATE snap_snapshots SET key = ?, kind = 'committed', created_ns = ?, updated_ns = ? WHERE key = ?").run(name, ns, ns, key);
  writeLabels(db, name, labels);
}

/** Replace the labels of `key` and set its update time. Precondition: inside pool.atomically. */
export function updateLabels(pool: Pool, key: string, labels: Record<string, string>, ns: bigint): void {
  const db = pool.metadataDb();
  db.prepare('UPDATE snap_snapshots SET updated_ns = ? WHERE key = ?').run(ns, key);
  writeLabels(db, key, labels);
}

/** Forget snapshot `key` and its labels (its device is the caller's). Precondition: inside pool.atomically. */
export function deleteSnapshot(pool: Pool, key: string): void {
  pool.metadataDb().prepare('DELETE FROM snap_snapshots WHERE key = ?').run(key);
}

/** Labels with an empty value are not kept (containerd's boltutil drops them: that is how one is removed). */
function writeLabels(db: Db, key: string, labels: Record<string, string>): void {
  db.prepare('DELETE FROM snap_labels WHERE key = ?').run(key);
  const put = db.prepare('INSERT INTO snap_labels (key, name, value) VALUES (?, ?, ?)');
  for (const [name, value] of Object.entries(labels)) if (value !== '') put.run(key, name, value);
}

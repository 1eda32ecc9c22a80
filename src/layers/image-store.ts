/**
 * What thinfs keeps of OCI and docker images beside the pool's devices: its own tables in
 * the pool's metadata database (component `images`, numbered migrations), so one commit
 * covers the devices and what they mean.
 *
 * Model. A loaded image is a chain of read-only *layer devices*, one per layer, each a
 * snapshot of the one below (the bottom one an empty thin device). A layer device is
 * identified by its OCI chain ID (image-spec config.md: chainID(1) = diffID(1),
 * chainID(n) = sha256(chainID(n-1) + " " + diffID(n))): the same diffIDs on the same
 * parents give the same tree, so a second image on the same base, or the same image from
 * another format, reuses the devices and adds no layer data. One device may answer to
 * several chain IDs: when `save` writes a layer as a new tar (its own bytes, so its own
 * diffID), that chain ID is recorded too, and loading the saved image adds nothing.
 * On top of its last layer, each image NAME:TAG is one more read-only device, an empty
 * snapshot (O(1), no data): so every image is a device that `create`, `mount`, `export`
 * and `rm` take by name, however many names share the layers. Its row here keeps the
 * reference as given (`docker.io/library/debian:12`), the config JSON exactly as loaded
 * (its bytes are its digest), the config and manifest digests and where it came from.
 *
 * Rows reference devices with ON DELETE CASCADE: when the pool deletes a device
 * (at once, or when a deferred deletion completes) its rows go in the same transaction;
 * nothing here needs to hear about deletions. Writes happen only inside pool.atomically,
 * so they join the pool's transaction and roll back with the operation.
 *
 * A pool opened read-only (a query without a daemon) is never migrated: before the first
 * writing use the tables may be missing, which reads as "no images".
 */
import { createHash } from 'node:crypto';
import { fail } from '../errors.js';
import { migrate, type Db, type DevId, type DeviceInfo, type Pool } from '../pool/index.js';

const COMPONENT = 'images';

/** Numbered migrations of the image tables; step i brings them to version i+1. */
const IMAGE_MIGRATIONS: string[] = [
  `
  -- Layer devices by chain ID. A device may answer to several chain IDs (see above).
  CREATE TABLE img_layers (
    chain_id TEXT NOT NULL,
    device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    diff_id TEXT NOT NULL,
    -- 'load': the diffID of the layer tar as loaded; 'save': of a tar thinfs wrote of it.
    how TEXT NOT NULL,
    PRIMARY KEY (chain_id, device_id)
  ) WITHOUT ROWID;
  CREATE INDEX img_layers_by_device ON img_layers(device_id);
  -- Image devices: the empty read-only snapshot on top of an image's last layer.
  CREATE TABLE img_images (
    device_id INTEGER PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    reference TEXT NOT NULL UNIQUE,
    config BLOB NOT NULL,
    config_digest TEXT NOT NULL,
    manifest_digest TEXT,
    source TEXT NOT NULL,
    loaded_ns INTEGER NOT NULL
  );
  `,
];

/** A digest as OCI writes it: `sha256:<64 hex>`. */
export type Digest = string;

/** One image as stored. */
export interface ImageRecord {
  deviceId: DevId;
  /** The reference as given or found (`debian:12`, `docker.io/library/debian:12`). */
  reference: string;
  /** The config JSON, byte-exact as loaded. */
  configBytes: Buffer;
  configDigest: Digest;
  manifestDigest: Digest | null;
  /** Where it was loaded from (`oci-archive:/tmp/x.tar`). */
  source: string;
  loadedNs: bigint;
}

/** `sha256:HEX` of `data`. */
export function sha256Digest(data: Buffer | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** The chain IDs of a layer stack given its diffIDs, bottom first (OCI image-spec, config.md). */
export function chainIds(diffIds: Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const d of diffIds) out.push(out.length === 0 ? d : sha256Digest(`${out[out.length - 1]!} ${d}`));
  return out;
}

/** True when the pool holds the image tables (a read-only open of a pool never written since they came may lack them). */
function haveTables(db: Db): boolean {
  const v = db.prepare('SELECT version FROM schema_versions WHERE component = ?').pluck().get(COMPONENT) as number | undefined;
  if (v === undefined) return false;
  if (v > IMAGE_MIGRATIONS.length) throw fail('EINVAL', 'open', COMPONENT, `images schema version ${v} is newer than this thinfs understands; upgrade thinfs`);
  return true;
}

/** Bring the image tables up to date; call before writing (inside pool.atomically or not: it makes its own operation). */
export function prepareImageTables(pool: Pool): void {
  if (pool.readOnlyOpen) return;
  const db = pool.metadataDb();
  const v = db.prepare('SELECT version FROM schema_versions WHERE component = ?').pluck().get(COMPONENT) as number | undefined;
  if (v === IMAGE_MIGRATIONS.length) return;
  pool.atomically('images: migrate', () => migrate(db, COMPONENT, IMAGE_MIGRATIONS));
}

interface ImageRow {
  device_id: number;
  reference: string;
  config: Buffer;
  config_digest: string;
  manifest_digest: string | null;
  source: string;
  loaded_ns: number | bigint;
}

function record(r: ImageRow): ImageRecord {
  return {
    deviceId: r.device_id as DevId,
    reference: r.reference,
    configBytes: r.config,
    configDigest: r.config_digest,
    manifestDigest: r.manifest_digest,
    source: r.source,
    loadedNs: BigInt(r.loaded_ns),
  };
}

/** The image stored for device `id`, or undefined (a layer, a container, a plain import). */
export function imageOfDevice(pool: Pool, id: DevId): ImageRecord | undefined {
  const db = pool.metadataDb();
  if (!haveTables(db)) return undefined;
  const r = db.prepare('SELECT * FROM img_images WHERE device_id = ?').get(id) as ImageRow | undefined;
  return r === undefined ? undefined : record(r);
}

/** Every stored image, by device id. */
export function listImages(pool: Pool): ImageRecord[] {
  const db = pool.metadataDb();
  if (!haveTables(db)) return [];
  return (db.prepare('SELECT * FROM img_images ORDER BY device_id').all() as ImageRow[]).map(record);
}

/** Store the image of device `rec.deviceId`. Precondition: inside pool.atomically, tables prepared. */
export function insertImage(pool: Pool, rec: ImageRecord): void {
  pool
    .metadataDb()
    .prepare(
      'INSERT INTO img_images (device_id, reference, config, config_digest, manifest_digest, source, loaded_ns) VALUES (?, ?, ?, ?, ?, ?, ?)',
    )
    .run(rec.deviceId, rec.reference, rec.configBytes, rec.configDigest, rec.manifestDigest, rec.source, rec.loadedNs);
}

/** The layer devices recorded under `chainId` (normally one; more while one is being deleted). */
export function layerDevices(pool: Pool, chainId: Digest): DevId[] {
  const db = pool.metadataDb();
  if (!haveTables(db)) return [];
  return db.prepare('SELECT device_id FROM img_layers WHERE chain_id = ? ORDER BY device_id').pluck().all(chainId) as DevId[];
}

/** The chain IDs device `id` answers to, with the diffID of each. */
export function chainIdsOfDevice(pool: Pool, id: DevId): { chainId: Digest; diffId: Digest; how: 'load' | 'save' }[] {
  const db = pool.metadataDb();
  if (!haveTables(db)) return [];
  const rows = db.prepare('SELECT chain_id, diff_id, how FROM img_layers WHERE device_id = ? ORDER BY how, chain_id').all(id) as {
    chain_id: string;
    diff_id: string;
    how: 'load' | 'save';
  }[];
  return rows.map((r) => ({ chainId: r.chain_id, diffId: r.diff_id, how: r.how }));
}

/** True when device `id` is a layer device (it answers to a chain ID). */
export function isLayerDevice(pool: Pool, id: DevId): boolean {
  const db = pool.metadataDb();
  if (!haveTables(db)) return false;
  return db.prepare('SELECT 1 FROM img_layers WHERE device_id = ? LIMIT 1').get(id) !== undefined;
}

/** Record that device `id` answers to `chainId`. Precondition: inside pool.atomically, tables prepared. */
export function insertLayer(pool: Pool, chainId: Digest, id: DevId, diffId: Digest, how: 'load' | 'save'): void {
  pool
    .metadataDb()
    .prepare('INSERT OR IGNORE INTO img_layers (chain_id, device_id, diff_id, how) VALUES (?, ?, ?, ?)')
    .run(chainId, id, diffId, how);
}

// ---------------------------------------------------------------- names

/**
 * The short form of a reference as docker shows it: `docker.io/library/x` and
 * `docker.io/x` lose their registry, and a reference without a tag or digest gets
 * `:latest`.
 */
export function familiarReference(ref: string): string {
  let r = ref;
  for (const p of ['docker.io/library/', 'index.docker.io/library/', 'docker.io/', 'index.docker.io/']) {
    if (r.startsWith(p)) {
      r = r.slice(p.length);
      break;
    }
  }
  const lastSlash = r.lastIndexOf('/');
  if (!r.includes('@') && !r.slice(lastSlash + 1).includes(':')) r = `${r}:latest`;
  return r;
}

/** The device name for image reference `ref`: its familiar form, with each character a device name can't hold as `_`. */
export function deviceNameFor(ref: string): string {
  const n = familiarReference(ref)
    .replace(/[^A-Za-z0-9_.:-]/g, '_')
    .replace(/^[^A-Za-z0-9]+/, '');
  return n.slice(0, 128);
}

/**
 * The active device `name` names: a device of that name, else an image whose reference
 * is `name` (or reads the same in its familiar form). Undefined when none.
 */
export function resolveImageName(pool: Pool, name: string): DeviceInfo | undefined {
  const byName = pool.findDevice(name);
  if (byName !== undefined) return byName;
  const images = listImages(pool);
  const exact = images.find((i) => i.reference === name);
  if (exact !== undefined) return pool.getDevice(exact.deviceId);
  const fam = familiarReference(name);
  const same = images.find((i) => familiarReference(i.reference) === fam);
  if (same !== undefined) return pool.getDevice(same.deviceId);
  return pool.findDevice(deviceNameFor(name));
}

/**
 * The image a device comes from: its own record, else that of the device it was created
 * from (origins, for a container or a committed image), else that of the nearest device
 * below it in its snapshot chain that has one. Undefined for a plain import or a layer.
 */
export function imageOf(pool: Pool, dev: DeviceInfo): ImageRecord | undefined {
  const own = imageOfDevice(pool, dev.id);
  if (own !== undefined) return own;
  const seen = new Set<number>([dev.id]);
  for (let o = dev.originId; o !== null && !seen.has(o); ) {
    seen.add(o);
    const r = imageOfDevice(pool, o);
    if (r !== undefined) return r;
    o = pool.getDevice(o)?.originId ?? null;
  }
  // The origin may be gone: the chain still holds the layers of the devices it sat on.
  const owner = new Map(pool.listDevices().map((d) => [d.layerId as number, d.id]));
  for (const layer of pool.chainOf(dev.id).layers.slice(1)) {
    const o = owner.get(layer as number);
    if (o === undefined) continue;
    const r = imageOfDevice(pool, o);
    if (r !== undefined) return r;
  }
  return undefined;
}

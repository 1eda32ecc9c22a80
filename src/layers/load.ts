/**
 * Loading a whole image (`thinfs load`): its layers as a chain of read-only layer devices
 * shared by chain ID, its config kept, and one image device per name (image-store.ts
 * says how they are laid out).
 *
 *   1. Open the source and check its documents (sources.ts); decide the names and check
 *      they are free — or already name this very image (then nothing is done for it).
 *      Bad input, a missing tag, a name in use: refused before anything changes.
 *   2. For each layer, bottom first: a device that answers to its chain ID is reused —
 *      no byte of that blob is read. Otherwise a new device (a snapshot of the one below)
 *      gets the layer through the tar importer while the blob is hashed twice on the way:
 *      the compressed bytes against the manifest's digest and size, the uncompressed tar
 *      against the config's diffID. Then it is made read-only, recorded, committed.
 *   3. The image devices: empty read-only snapshots of the top layer, with their records.
 * When anything fails, every device this load created is deleted and the deletion
 * committed: nothing half-loaded remains, and what was there before is untouched. A layer
 * whose import fails is re-hashed to tell a corrupt blob (digest mismatch, said so) from
 * a bad tar. A crash in the middle leaves committed layers (complete, reusable by the
 * next load) and at most one incomplete layer device, which the next load that needs
 * its name removes.
 *
 * Two loads in one daemon may run interleaved: a layer being loaded by one is awaited by
 * the other (never loaded twice, never removed as a leftover under its loader). The
 * tar import gives the event loop a turn every 20 ms (tar.ts), so mounts stay served.
 */
import { createHash } from 'node:crypto';
import { fail } from '../errors.js';
import { Filesystem } from '../fs/index.js';
import { logger } from '../log.js';
import type { DevId, DeviceInfo, Pool } from '../pool/index.js';
import type { FileStore } from './archive.js';
import type { ImportProgress, ImportStats } from './common.js';
import { resolveSource } from './image.js';
import {
  chainIds,
  chainIdsOfDevice,
  deviceNameFor,
  imageOfDevice,
  insertImage,
  insertLayer,
  layerDevices,
  listImages,
  prepareImageTables,
  type Digest,
} from './image-store.js';
import { openImageSource, parseImageSpec, type ImagePlan, type LayerPlan, type Transport } from './sources.js';
import { decompressed, tapped } from './streams.js';
import { importTarStream } from './tar.js';

const log = logger('layers');
/** Layer data between two flushes of the data file's pages (flushData). */
const FLUSH_EVERY_BYTES = 16 * 1024 * 1024;

export interface LoadOptions {
  /** SOURCE in transport syntax, with an absolute path. */
  source: string;
  /** NAME[:TAG] for the image (one image only); default: the names the source gives. */
  name?: string;
  /** Where a compressed archive is decompressed to (the pool root's tmp/). */
  spoolDir: string;
  /** Mountpoints served by this process: never read through them. */
  avoid?: string[];
  onProgress?: (p: LoadProgress) => void;
}

/** Progress of a load: bytes of layer blobs read, of those that are not already in the pool. */
export interface LoadProgress extends ImportProgress {
  /** The layer being loaded (1-based) and how many layers need loading. */
  layer: number;
  layers: number;
}

export interface LoadedLayer {
  chainId: Digest;
  diffId: Digest;
  device: string;
  /** True when an existing device was used: no data added. */
  shared: boolean;
  stats: ImportStats | null;
}

export interface LoadedImage {
  reference: string;
  device: string;
  configDigest: Digest;
  manifestDigest: Digest | null;
  /** `exists`: this name already named this image; nothing was done. */
  result: 'loaded' | 'exists';
  layers: LoadedLayer[];
}

export interface LoadResult {
  source: string;
  format: Transport;
  images: LoadedImage[];
  /** Layers loaded now, and layers found in the pool already. */
  newLayers: number;
  sharedLayers: number;
  /** Bytes of file data the new layers hold. */
  dataBytes: number;
  elapsedMs: number;
}

/** Layer loads in progress, by pool and chain ID (see the top of this file). */
const inflight = new WeakMap<Pool, Map<Digest, Promise<unknown>>>();

/** Load the image(s) of `opts.source` into `pool`. See the top of this file. */
export async function loadImage(pool: Pool, opts: LoadOptions): Promise<LoadResult> {
  const started = Date.now();
  const spec = parseImageSpec(opts.source, 'load');
  spec.path = resolveSource(spec.path, opts.avoid ?? []);
  const src = await openImageSource(spec, opts.spoolDir);
  try {
    prepareImageTables(pool);
    const named = nameImages(pool, src.images, opts.name, src.fallbackName, src.describe);
    const todo = named.flatMap((n) => {
      if (n.allExist) return [];
      const chain = chainIds(n.plan.layers.map((l) => l.diffId));
      return n.plan.layers.filter((_, i) => !haveLayer(pool, chain[i]!));
    });
    const progress = progressOf(opts, todo.reduce((s, l) => s + l.sizeBytes, 0), todo.length);
    const created: DevId[] = [];
    const images: LoadedImage[] = [];
    try {
      for (const n of named) images.push(...(await loadOne(pool, src.store, src.describe, n, created, progress)));
      pool.commit();
    } catch (err) {
      undo(pool, created);
      throw err;
    }
    const layers = images.filter((i) => i.result === 'loaded').flatMap((i) => i.layers);
    const newLayers = new Set(layers.filter((l) => !l.shared).map((l) => l.chainId));
    const result: LoadResult = {
      source: src.describe,
      format: src.format,
      images,
      newLayers: newLayers.size,
      sharedLayers: new Set(layers.filter((l) => l.shared && !newLayers.has(l.chainId)).map((l) => l.chainId)).size,
      dataBytes: layers.reduce((s, l) => s + (l.stats?.dataBytes ?? 0), 0),
      elapsedMs: Date.now() - started,
    };
    log.info({ source: result.source, images: images.map((i) => i.reference), newLayers: result.newLayers, sharedLayers: result.sharedLayers }, 'image loaded');
    return result;
  } finally {
    src.close();
  }
}

interface NamedPlan {
  plan: ImagePlan;
  /** [reference, device name, already there] for each name it gets. */
  names: { reference: string; device: string; exists: boolean }[];
  allExist: boolean;
}

/**
 * The names each image gets, checked: free, or already naming this very image (same
 * config digest). Refused (EEXIST) when a name is taken by anything else.
 */
function nameImages(pool: Pool, plans: ImagePlan[], name: string | undefined, fallback: string, where: string): NamedPlan[] {
  if (name !== undefined && plans.length > 1) {
    throw fail('EINVAL', 'load', where, `the source holds ${plans.length} images: pick one (docker-archive:FILE:REF or @N) to give it --name`);
  }
  const images = listImages(pool);
  const seen = new Set<string>();
  return plans.map((plan) => {
    let refs: string[];
    if (name !== undefined) refs = [withTag(validReference(name, where))];
    else if (plan.names.length > 0) refs = plan.names.map((n) => (/[:/@]/.test(n) ? withTag(n) : `${fallback}:${n}`));
    else refs = [`${fallback}:latest`];
    const names = [...new Set(refs)]
      .filter((r) => !seen.has(r))
      .map((reference) => {
        seen.add(reference);
        const device = deviceNameFor(reference);
        if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/.test(device)) throw fail('EINVAL', 'load', reference, `'${reference}' makes no valid device name; give one with --name`);
        const rec = images.find((i) => i.reference === reference) ?? imageByDevice(pool, device);
        const dev = pool.findDevice(device);
        if (rec === undefined && dev === undefined) return { reference, device, exists: false };
        if (rec !== undefined && rec.configDigest === plan.configDigest && pool.getDevice(rec.deviceId)?.state === 'active') {
          return { reference, device: pool.getDevice(rec.deviceId)!.name, exists: true };
        }
        throw fail(
          'EEXIST',
          'load',
          reference,
          `an image or container named '${dev?.name ?? reference}' exists${rec !== undefined ? ` (image ${rec.configDigest.slice(7, 19)})` : ''}; remove it with \`thinfs rm\`, or load under another --name`,
        );
      });
    return { plan, names, allExist: names.every((n) => n.exists) };
  });
}

function imageByDevice(pool: Pool, device: string) {
  const d = pool.findDevice(device);
  return d === undefined ? undefined : imageOfDevice(pool, d.id);
}

/** Load one image's layers and make its image devices; every device made is pushed to `created`. */
async function loadOne(pool: Pool, store: FileStore, where: string, n: NamedPlan, created: DevId[], progress: Progress): Promise<LoadedImage[]> {
  const chain = chainIds(n.plan.layers.map((l) => l.diffId));
  const layers: LoadedLayer[] = [];
  if (!n.allExist) {
    let below: DeviceInfo | undefined;
    for (let i = 0; i < n.plan.layers.length; i++) {
      const r = await ensureLayer(pool, store, where, n.plan.layers[i]!, i, n.plan.layers.length, chain[i]!, below, created, progress);
      layers.push(r.layer);
      below = r.device;
    }
    for (const name of n.names.filter((x) => !x.exists)) {
      const id =
        below === undefined
          ? emptyImage(pool, name.device, created)
          : pool.createSnapshot(below.id, name.device, { kind: 'image', readOnly: true });
      if (below !== undefined) created.push(id);
      pool.atomically('load: image', () =>
        insertImage(pool, {
          deviceId: id,
          reference: name.reference,
          configBytes: n.plan.configBytes,
          configDigest: n.plan.configDigest,
          manifestDigest: n.plan.manifestDigest,
          source: where,
          loadedNs: BigInt(Date.now()) * 1_000_000n,
        }),
      );
    }
  }
  return n.names.map((name) => ({
    reference: name.reference,
    device: name.device,
    configDigest: n.plan.configDigest,
    manifestDigest: n.plan.manifestDigest,
    result: name.exists ? 'exists' : 'loaded',
    layers: name.exists ? [] : layers,
  }));
}

/** An image of no layers: an empty read-only device (its root directory only). */
function emptyImage(pool: Pool, name: string, created: DevId[]): DevId {
  const id = pool.createThin(name, { kind: 'image' });
  created.push(id);
  Filesystem.open(pool, id).close();
  pool.setReadOnly(id);
  return id;
}

/** The usable device answering to `chainId`, if any. */
function findLayer(pool: Pool, chainId: Digest): DeviceInfo | undefined {
  return layerDevices(pool, chainId)
    .map((id) => pool.getDevice(id))
    .find((d): d is DeviceInfo => d !== undefined && d.state === 'active' && d.readOnly);
}

function haveLayer(pool: Pool, chainId: Digest): boolean {
  return findLayer(pool, chainId) !== undefined;
}

/** The device of layer `i` (chain ID `chainId`) on `below`: found, awaited from another load, or loaded now. */
async function ensureLayer(
  pool: Pool,
  store: FileStore,
  where: string,
  layer: LayerPlan,
  i: number,
  count: number,
  chainId: Digest,
  below: DeviceInfo | undefined,
  created: DevId[],
  progress: Progress,
): Promise<{ device: DeviceInfo; layer: LoadedLayer }> {
  let busy = inflight.get(pool);
  if (busy === undefined) inflight.set(pool, (busy = new Map()));
  for (;;) {
    const found = findLayer(pool, chainId);
    if (found !== undefined) return { device: found, layer: { chainId, diffId: layer.diffId, device: found.name, shared: true, stats: null } };
    const other = busy.get(chainId);
    if (other === undefined) break;
    await other.catch(() => undefined);
  }
  let done!: () => void;
  busy.set(chainId, new Promise<void>((resolve) => (done = resolve)));
  try {
    const name = layerDeviceName(pool, chainId);
    const id = below === undefined ? pool.createThin(name, { kind: 'image' }) : pool.createSnapshot(below.id, name, { kind: 'image', readOnly: false });
    created.push(id);
    const label = `${where} (layer ${i + 1} of ${count}, ${layer.digest ?? layer.diffId})`;
    let target: Filesystem | undefined = Filesystem.open(pool, id);
    let stats: ImportStats;
    try {
      stats = await importLayer(pool, target, store, layer, label, progress);
      target.close();
      target = undefined;
    } finally {
      target?.close();
    }
    pool.setReadOnly(id);
    pool.atomically('load: layer', () => insertLayer(pool, chainId, id, layer.diffId, 'load'));
    await flushData(pool);
    pool.commit();
    const device = pool.getDevice(id)!;
    return { device, layer: { chainId, diffId: layer.diffId, device: name, shared: false, stats } };
  } finally {
    busy.delete(chainId);
    done();
  }
}

/**
 * A free device name for a layer: `layer-<16 hex of its chain ID>`. A device of that name
 * left by an interrupted load (writable, answering to no chain ID, nothing on it) is
 * removed; one in any other use makes the name `...-N`.
 */
function layerDeviceName(pool: Pool, chainId: Digest): string {
  const base = `layer-${chainId.slice('sha256:'.length, 'sha256:'.length + 16)}`;
  const left = pool.findDevice(base);
  if (left !== undefined && !left.readOnly && left.state === 'active' && chainIdsOfDevice(pool, left.id).length === 0 && pool.childrenOf(left.id).length === 0) {
    log.warn({ device: base }, 'removing the incomplete layer device of an interrupted load');
    pool.deleteDevice(left.id);
  }
  for (let n = 1; ; n++) {
    const name = n === 1 ? base : `${base}-${n}`;
    if (pool.findDevice(name) === undefined) return name;
  }
}

/** Import one layer blob into `target`, verifying its digest, size and diffID (see the top of this file). */
async function importLayer(pool: Pool, target: Filesystem, store: FileStore, layer: LayerPlan, label: string, progress: Progress): Promise<ImportStats> {
  const blockSizeBytes = pool.blockSizeBytes;
  const blobHash = createHash('sha256');
  const diffHash = createHash('sha256');
  const blob = { bytes: 0 };
  const tar = { bytes: 0 };
  const raw = store.stream(layer.blob);
  let stats: ImportStats;
  progress.next(layer.sizeBytes);
  try {
    const plain = flushing(pool, tapped(decompressed(tapped(raw, blobHash, blob), layer.compression, label), diffHash, tar), tar);
    stats = await importTarStream(target, plain, label, blockSizeBytes, {
      totalBytes: layer.sizeBytes,
      doneBytes: () => blob.bytes,
      onProgress: (p) => progress.report(p.done, p.entries),
      progressIntervalMs: 100,
    });
  } catch (err) {
    raw.destroy();
    // A corrupt blob is the likelier cause of a failed import: say so when its digest shows it.
    throw (await blobMismatch(store, layer, label)) ?? err;
  } finally {
    raw.destroy();
  }
  const digest = `sha256:${blobHash.digest('hex')}`;
  if (layer.digest !== undefined && digest !== layer.digest) throw mismatch(label, 'its blob', layer.digest, digest);
  if (layer.digest !== undefined && blob.bytes !== layer.sizeBytes) {
    throw fail('EINVAL', 'load', label, `the blob is ${blob.bytes} bytes, the manifest says ${layer.sizeBytes}; refused, nothing loaded`);
  }
  const diffId = `sha256:${diffHash.digest('hex')}`;
  if (diffId !== layer.diffId) throw mismatch(label, 'its uncompressed tar (diffID)', layer.diffId, diffId);
  return stats;
}

/** Write back the data file's dirty pages off the JS thread (Pool.flushDataAsync says why). */
function flushData(pool: Pool): Promise<void> {
  return pool.flushDataAsync();
}

/** `input` unchanged, with a flushData every FLUSH_EVERY_BYTES of it (`count` counts them). */
async function* flushing(pool: Pool, input: AsyncIterable<Buffer>, count: { bytes: number }): AsyncGenerator<Buffer> {
  let next = FLUSH_EVERY_BYTES;
  for await (const chunk of input) {
    yield chunk;
    if (count.bytes >= next) {
      next = count.bytes + FLUSH_EVERY_BYTES;
      await flushData(pool);
    }
  }
}

/** The digest-mismatch error of `layer`'s blob, read again whole; undefined when it matches (or names no digest). */
async function blobMismatch(store: FileStore, layer: LayerPlan, label: string): Promise<Error | undefined> {
  if (layer.digest === undefined) return undefined;
  try {
    const h = createHash('sha256');
    for await (const c of store.stream(layer.blob)) h.update(c as Buffer);
    const got = `sha256:${h.digest('hex')}`;
    return got === layer.digest ? undefined : mismatch(label, 'its blob', layer.digest, got);
  } catch {
    return undefined;
  }
}

function mismatch(label: string, what: string, expected: Digest, got: Digest): Error {
  return fail('EINVAL', 'load', label, `digest mismatch: ${what} is ${got}, the image says ${expected} (corrupt or altered); refused, nothing loaded`);
}

/** Delete what a failed load created, top first, and commit. Never throws (the load's error matters). */
function undo(pool: Pool, created: DevId[]): void {
  for (const id of [...created].reverse()) {
    try {
      const mode = pool.mode();
      if (mode === 'write' || mode === 'out-of-data-space') pool.deleteDevice(id);
    } catch (err) {
      log.error({ err, device: id }, 'could not delete a device of a failed load; remove it with `thinfs rm`');
    }
  }
  try {
    const mode = pool.mode();
    if (mode === 'write' || mode === 'out-of-data-space') pool.commit();
  } catch (err) {
    log.error({ err }, 'could not commit the removal of a failed load');
  }
}

/** `name:latest` for a reference without a tag or digest. */
function withTag(ref: string): string {
  const last = ref.slice(ref.lastIndexOf('/') + 1);
  return ref.includes('@') || last.includes(':') ? ref : `${ref}:latest`;
}

function validReference(name: string, where: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._\/:@-]{0,254}$/.test(name) || name.includes('//') || name.endsWith(':') || name.endsWith('/')) {
    throw fail('EINVAL', 'load', where, `'${name}' is not an image name (NAME[:TAG]: letters, digits, . _ - / : @)`);
  }
  return name;
}

interface Progress {
  /** A new layer of `sizeBytes` starts. */
  next(sizeBytes: number): void;
  report(doneInLayer: number, entries: number): void;
}

function progressOf(opts: LoadOptions, totalBytes: number, layers: number): Progress {
  let base = 0;
  let current = 0;
  let layer = 0;
  return {
    next(sizeBytes) {
      base += current;
      current = sizeBytes;
      layer++;
    },
    report(done, entries) {
      opts.onProgress?.({ done: base + done, total: totalBytes, unit: 'bytes', entries, layer, layers });
    },
  };
}

/**
 * Images and containers: import, load, save, create, commit, ls, inspect, rm, imageConfig. Arguments are plain
 * JSON (validated here: they may come off the control socket); results are plain JSON
 * (bigints as strings, sizes in bytes) that the commands format.
 *
 * Words. An *image* is a read-only device (kind image, or a base device); a *container*
 * is a writable snapshot of an image. A device's *parent* is the device its data sits
 * on: the owner of the nearest layer below its own in the snapshot chain. After
 * `commit C I2`, container C sits on I2 (the pool moves C onto a new layer over the one
 * I2 took), so C's parent is I2 from then on; `origin` keeps what it was created from.
 *
 * Decisions, docker-like:
 *  - `create` and `import --parent` take an image only: a container must be committed first.
 *  - `commit` takes a container only (an image is already one); it works while the
 *    container is mounted — the daemon runs it on its own pool, between FUSE requests.
 *  - `rm` of an image that containers sit on is refused; with `force`, those containers
 *    are removed too (a mounted one: deferred until unmounted). Images sitting on it only
 *    defer its deletion (devicemapper's deferred deletion), as does being mounted.
 *  - Loaded images (layers/load.ts) are an image device on a chain of layer devices shared
 *    by chain ID. `rm` of the image also removes the layer devices no other device needs
 *    any more (as `docker rmi` untags and deletes), top down; `ls` shows layer devices
 *    with --all only, and lists the images with their references.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { finished } from 'node:stream/promises';
import { fail, type ErrnoCode } from '../../errors.js';
import { Filesystem } from '../../fs/index.js';
import {
  chainIds,
  chainIdsOfDevice,
  execConfigOf,
  exportLayer,
  familiarReference,
  isLayerDevice,
  layerDevices,
  listImages,
  saveImage,
  findImage,
  imageOf,
  importImage,
  loadImage,
  parseImageSpec,
  resolveImageName,
  type ImageConfig,
  type ImageRecord,
  type LoadProgress,
  type LoadResult,
  type SaveResult,
  type ExportStats,
  type ImportImageResult,
  type ImportProgress,
} from '../../layers/index.js';
import type { DevId, DeviceInfo, DeviceKind, Pool } from '../../pool/index.js';
import { argsObject, optBool, optString, reqString, withPool, type OpContext, type OpFn } from './context.js';

/** One device as `thinfs ls` shows it. */
export interface DeviceSummary {
  id: number;
  name: string;
  kind: DeviceKind;
  /** The device this one's data sits on (null for a base image). */
  parent: string | null;
  readOnly: boolean;
  /** active; deferred (deletion waits for its children or its mount); incomplete (an image whose import has not finished). */
  state: 'active' | 'deferred' | 'incomplete';
  /** Data bytes visible through the chain, exact: own and inherited pool blocks, plus inline bytes. */
  mappedBytes: number;
  /** Data bytes only this device holds (what deleting it gives back): its pool blocks plus its inline bytes. */
  exclusiveBytes: number;
  /** Of mappedBytes, the bytes of small blocks held inline in the metadata (they take no pool block). */
  inlineBytes: number;
  /** Of exclusiveBytes, the inline bytes. */
  inlineExclusiveBytes: number;
  sizeLimitBytes: number;
  /** ISO 8601. */
  created: string;
  /** Nanoseconds since the epoch, as a decimal string. */
  createdNs: string;
  /** The loaded image this device is (its own record), or null. */
  image: ImageSummary | null;
  /** True for a layer device of loaded images (one layer, shared by chain ID). */
  layer: boolean;
}

/** A loaded image as `thinfs ls` lists it. */
export interface ImageSummary {
  reference: string;
  repository: string;
  tag: string;
  /** The config digest (docker's image ID). */
  id: string;
  /** The config's `created`, if it has one. */
  created: string | null;
  layers: number;
}

export interface InspectResult extends DeviceSummary {
  /** What it was created from (a snapshot's origin), if that device still exists. */
  origin: string | null;
  /** The devices below it, nearest first, down to the base. */
  chain: { name: string; kind: DeviceKind }[];
  /** The devices sitting directly on it. */
  children: { name: string; kind: DeviceKind; state: DeviceSummary['state'] }[];
  /** Layers in its snapshot chain, its own included. */
  depth: number;
  blockSize: number;
  /** The image it is, or (`inherited`) the image it was created from; null for plain imports. */
  imageInfo: ImageDetail | null;
  /** For a layer device: the chain IDs it answers to. */
  layerIds: { chainId: string; diffId: string; how: 'load' | 'save' }[];
}

/** A loaded image in detail, as `thinfs inspect` shows it. */
export interface ImageDetail {
  reference: string;
  /** The device of the image (differs from the inspected one when inherited). */
  device: string | null;
  /** True when the inspected device is a container or commit of this image. */
  inherited: boolean;
  configDigest: string;
  manifestDigest: string | null;
  source: string;
  loaded: string;
  /** The whole image config (architecture, os, config: {Entrypoint, Cmd, Env, ...}, rootfs, history). */
  config: Record<string, unknown>;
  /** The image's layers, bottom first: the device holding each (null when gone). */
  layers: { diffId: string; chainId: string; device: string | null }[];
}

export interface ImportResult extends Omit<ImportImageResult, 'id'> {
  id: number;
}

export interface ExportResult {
  name: string;
  file: string;
  diff: boolean;
  stats: ExportStats;
}

export interface RmResult {
  name: string;
  kind: DeviceKind;
  result: 'deleted' | 'deferred';
  /** Why the deletion waits (when deferred). */
  waitingFor: string[];
  /** Containers removed along with an image (--force). */
  containers: { name: string; result: 'deleted' | 'deferred' }[];
  /** Layer devices of loaded images that nothing needs any more, removed too. */
  layers: { name: string; result: 'deleted' | 'deferred' }[];
}


/** A new image from a directory or a tar: `name`, `source` (absolute path), `parent` (image name). */
export function importOp(ctx: OpContext, raw: unknown): Promise<ImportResult> {
  const a = argsObject('import', raw);
  const name = reqString('import', a, 'name');
  const source = reqString('import', a, 'source');
  const parent = optString('import', a, 'parent');
  if (!path.isAbsolute(source)) throw fail('EINVAL', 'import', source, 'the source must be an absolute path');
  const avoid = ctx.mounts?.list().map((m) => m.mountpoint) ?? [];
  return withPool(ctx, 'write', async (pool) => {
    const r = await importImage(pool, { name, source, parent, avoid, onProgress: ctx.progress as ((p: ImportProgress) => void) | undefined });
    return { ...r, id: r.id as number };
  });
}

/** A container `name`: a writable snapshot of image `image`. */
export function create(ctx: OpContext, raw: unknown): Promise<DeviceSummary> {
  const a = argsObject('create', raw);
  const name = reqString('create', a, 'name');
  const image = reqString('create', a, 'image');
  return withPool(ctx, 'write', (pool) => {
    if (pool.findDevice(name) !== undefined) throw exists('create', name);
    const from = findImage(pool, image, 'create');
    const id = pool.createSnapshot(from.id, name, { kind: 'container', readOnly: false });
    return summaries(pool).find((d) => d.id === id)!;
  });
}

/** An image `name` of container `container` as it is now (mounted or not). */
export async function commit(ctx: OpContext, raw: unknown): Promise<DeviceSummary> {
  const a = argsObject('commit', raw);
  const container = reqString('commit', a, 'container');
  const name = reqString('commit', a, 'name');
  // What a mounted container wrote may still sit in the kernel's writeback cache: the
  // image takes what was written before the commit (a write racing it lands in either).
  await ctx.mounts?.flush(container);
  return withPool(ctx, 'write', (pool) => {
    const c = pool.findDevice(container);
    if (c === undefined) throw fail('ENOENT', 'commit', container, `no container named '${container}' (see \`thinfs ls\`)`);
    if (c.state === 'deferred') throw fail('ENOENT', 'commit', container, `container '${container}' is being deleted`);
    if (c.kind !== 'container' || c.readOnly) throw fail('EINVAL', 'commit', container, `'${container}' is an image, not a container (\`thinfs create\` makes a container of it)`);
    if (pool.findDevice(name) !== undefined) throw exists('commit', name);
    const id = pool.createSnapshot(c.id, name, { kind: 'image', readOnly: true });
    return summaries(pool).find((d) => d.id === id)!;
  });
}

/** Every image and container. */
export function ls(ctx: OpContext, raw: unknown): Promise<DeviceSummary[]> {
  argsObject('ls', raw);
  return withPool(ctx, 'read', (pool) => summaries(pool));
}

/** One device in detail: its chain down to the base and the devices sitting on it. */
export function inspect(ctx: OpContext, raw: unknown): Promise<InspectResult> {
  const name = reqString('inspect', argsObject('inspect', raw), 'name');
  return withPool(ctx, 'read', (pool) => {
    const d = resolveImageName(pool, name);
    if (d === undefined) throw noSuchDevice('inspect', name);
    const topo = topology(pool);
    const all = summaries(pool, topo);
    const byId = new Map(all.map((s) => [s.id, s]));
    const chain: InspectResult['chain'] = [];
    for (let p = topo.parent.get(d.id); p !== undefined; p = topo.parent.get(p.id)) chain.push({ name: p.name, kind: p.kind });
    const origin = d.originId === null ? undefined : pool.getDevice(d.originId);
    return {
      ...byId.get(d.id)!,
      origin: origin?.name ?? null,
      chain,
      children: (topo.children.get(d.id) ?? []).map((c) => ({ name: c.name, kind: c.kind, state: byId.get(c.id)!.state })),
      depth: d.depth,
      blockSize: pool.blockSizeBytes,
      imageInfo: imageDetail(pool, d),
      layerIds: chainIdsOfDevice(pool, d.id),
    };
  });
}

/** Delete `name` (see the top of this file for images with containers and `force`). */
export function rm(ctx: OpContext, raw: unknown): Promise<RmResult> {
  const a = argsObject('rm', raw);
  const name = reqString('rm', a, 'name');
  const force = optBool('rm', a, 'force');
  return withPool(ctx, 'write', (pool) => {
    const d = resolveImageName(pool, name);
    if (d === undefined) throw noSuchDevice('rm', name);
    const topo = topology(pool);
    const children = topo.children.get(d.id) ?? [];
    const containers = d.kind === 'container' ? [] : children.filter((c) => c.kind === 'container' && c.state === 'active');
    if (containers.length > 0 && !force) {
      throw fail(
        'EBUSY',
        'rm',
        name,
        `image '${name}' has containers: ${containers.map((c) => c.name).join(', ')} (remove them first, or use --force to remove them too)`,
      );
    }
    const removed = containers.map((c) => ({ name: c.name, result: pool.deleteDevice(c.id) }));
    const mounted = new Set(ctx.mounts?.list().map((m) => m.name) ?? []);
    const left = children.filter((c) => !removed.some((r) => r.name === c.name && r.result === 'deleted'));
    const below = topo.parent.get(d.id);
    const result = pool.deleteDevice(d.id);
    const layers = collectLayers(pool, below, new Set([d.id, ...removed.map((r) => pool.findDevice(r.name)?.id).filter((x): x is DevId => x !== undefined)]));
    const waitingFor: string[] = [];
    if (result === 'deferred') {
      if (mounted.has(d.name)) waitingFor.push('its mount (thinfs umount)');
      for (const c of left) waitingFor.push(`${c.kind} ${c.name}`);
      if (waitingFor.length === 0) waitingFor.push('an open handle');
    }
    return { name: d.name, kind: d.kind, result, waitingFor, containers: removed, layers };
  });
}

/** Write device `name` (or, with `diff`, what it changes over its parent) to `file` (absolute) as an OCI layer tar. */
export async function exportOp(ctx: OpContext, raw: unknown): Promise<ExportResult> {
  const a = argsObject('export', raw);
  const name = reqString('export', a, 'name');
  const file = reqString('export', a, 'file');
  const diff = optBool('export', a, 'diff');
  if (!path.isAbsolute(file)) throw fail('EINVAL', 'export', file, 'the output file must be an absolute path');
  await ctx.mounts?.flush(name);
  return withPool(ctx, 'read', async (pool) => {
    const d = resolveImageName(pool, name);
    if (d === undefined) throw noSuchDevice('export', name);
    if (d.state === 'deferred') throw fail('ENOENT', 'export', name, `'${name}' is being deleted`);
    const view = Filesystem.open(pool, d.id, { readOnly: true });
    let out: fs.WriteStream | undefined;
    try {
      out = fs.createWriteStream(file, { mode: 0o644 });
      await new Promise<void>((resolve, reject) => {
        out!.once('open', () => resolve());
        out!.once('error', reject);
      });
      const stats = await exportLayer(view, out, { diff });
      out.end();
      await finished(out);
      return { name, file, diff, stats };
    } catch (err) {
      out?.destroy();
      if (out !== undefined && out.pending !== true) fs.rmSync(file, { force: true });
      const e = err as NodeJS.ErrnoException;
      if (typeof e.code === 'string' && e.syscall !== undefined && !(err instanceof Error && err.name === 'ThinfsError')) {
        throw fail(e.code as ErrnoCode, 'export', file, `cannot write the output (${e.message})`);
      }
      throw err;
    } finally {
      view.close();
    }
  });
}

/** The execution config (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`, ...) of an image's OCI config. */
export type ExecConfig = Record<string, unknown> & {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
  Labels?: Record<string, string> | null;
};

export interface ImageConfigResult {
  /** The `config` object of the image's OCI config; null when the device has none (a plain import, a layer). */
  config: ExecConfig | null;
}

/**
 * The config of image `name` (a device name or an image reference) — for a container or a
 * committed image, that of the image it was created from (image-store.ts imageOf).
 */
export async function imageConfig(ctx: OpContext, raw: unknown): Promise<ImageConfigResult> {
  const name = reqString('imageConfig', argsObject('imageConfig', raw), 'name');
  return withPool(ctx, 'read', (pool) => {
    const d = resolveImageName(pool, name);
    if (d === undefined) throw noSuchDevice('imageConfig', name);
    const rec = imageOf(pool, d);
    if (rec === undefined) return { config: null };
    return { config: execConfigOf(rec.configBytes) };
  });
}

/**
 * Load an OCI or docker image: `source` in transport syntax with an absolute path,
 * `name` NAME[:TAG] (optional). Runs in the daemon like import, yielding to its mounts.
 */
export async function loadOp(ctx: OpContext, raw: unknown): Promise<LoadResult> {
  const a = argsObject('load', raw);
  const source = reqString('load', a, 'source');
  const name = optString('load', a, 'name');
  if (!path.isAbsolute(parseImageSpec(source, 'load').path)) throw fail('EINVAL', 'load', source, 'the source path must be absolute');
  const avoid = ctx.mounts?.list().map((m) => m.mountpoint) ?? [];
  return withPool(ctx, 'write', (pool) =>
    loadImage(pool, { source, name, spoolDir: path.join(ctx.root, 'tmp'), avoid, onProgress: ctx.progress as ((p: LoadProgress) => void) | undefined }),
  );
}

/** Write image `name` to `dest` (transport syntax, absolute path): oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF]. */
export async function saveOp(ctx: OpContext, raw: unknown): Promise<SaveResult> {
  const a = argsObject('save', raw);
  const name = reqString('save', a, 'name');
  const dest = reqString('save', a, 'dest');
  if (!path.isAbsolute(parseImageSpec(dest, 'save').path)) throw fail('EINVAL', 'save', dest, 'the destination path must be absolute');
  await ctx.mounts?.flush(name);
  // 'write': it records the chain IDs of the layers it writes (layers/save.ts).
  return withPool(ctx, 'write', (pool) => saveImage(pool, { name, dest, tmpDir: path.join(ctx.root, 'tmp') }));
}

export const IMAGE_OPS: Record<string, OpFn> = {
  import: importOp,
  load: loadOp,
  save: saveOp,
  create,
  commit,
  ls,
  inspect,
  rm,
  export: exportOp,
  imageConfig,
};

// ---------------------------------------------------------------- helpers

interface Topology {
  parent: Map<DevId, DeviceInfo>;
  children: Map<DevId, DeviceInfo[]>;
}

/** Parents and children by the snapshot chain: a device's parent owns the nearest layer below its own. */
function topology(pool: Pool): Topology {
  const devices = pool.listDevices();
  const owner = new Map(devices.map((d) => [d.layerId, d]));
  const parent = new Map<DevId, DeviceInfo>();
  const children = new Map<DevId, DeviceInfo[]>();
  for (const d of devices) {
    const below = pool.chainOf(d.id).layers.slice(1);
    const p = below.map((l) => owner.get(l)).find((o) => o !== undefined);
    if (p === undefined) continue;
    parent.set(d.id, p);
    children.set(p.id, [...(children.get(p.id) ?? []), d]);
  }
  return { parent, children };
}

function summaries(pool: Pool, topo = topology(pool)): DeviceSummary[] {
  const images = new Map(listImages(pool).map((i) => [i.deviceId as number, i]));
  return pool.listDevices().map((d) => ({
    id: d.id,
    name: d.name,
    kind: d.kind,
    parent: topo.parent.get(d.id)?.name ?? null,
    readOnly: d.readOnly,
    state: d.state === 'deferred' ? 'deferred' : d.kind === 'image' && !d.readOnly ? 'incomplete' : 'active',
    mappedBytes: d.mappedBytes,
    exclusiveBytes: d.exclusiveBytes,
    inlineBytes: d.inlineMappedBytes,
    inlineExclusiveBytes: d.inlineExclusiveBytes,
    sizeLimitBytes: d.sizeLimitBytes,
    created: new Date(Number(d.createdNs / 1_000_000n)).toISOString(),
    createdNs: d.createdNs.toString(),
    image: imageSummary(images.get(d.id)),
    layer: isLayerDevice(pool, d.id),
  }));
}

function imageSummary(rec: ImageRecord | undefined): ImageSummary | null {
  if (rec === undefined) return null;
  const config = parseConfig(rec.configBytes);
  const fam = familiarReference(rec.reference);
  const at = fam.includes('@') ? fam.indexOf('@') : fam.lastIndexOf(':');
  return {
    reference: rec.reference,
    repository: fam.slice(0, at),
    tag: fam.slice(at + 1),
    id: rec.configDigest,
    created: typeof config.created === 'string' ? config.created : null,
    layers: Array.isArray(config.rootfs?.diff_ids) ? config.rootfs.diff_ids.length : 0,
  };
}

function parseConfig(bytes: Buffer): Partial<ImageConfig> {
  try {
    return JSON.parse(bytes.toString('utf8')) as Partial<ImageConfig>;
  } catch {
    return {};
  }
}

/** The image `d` is or comes from, with its config and the devices of its layers. */
function imageDetail(pool: Pool, d: DeviceInfo): ImageDetail | null {
  const rec = imageOf(pool, d);
  if (rec === undefined) return null;
  const config = parseConfig(rec.configBytes) as Record<string, unknown> & Partial<ImageConfig>;
  const diffIds = Array.isArray(config.rootfs?.diff_ids) ? config.rootfs.diff_ids : [];
  const chain = chainIds(diffIds);
  return {
    reference: rec.reference,
    device: pool.getDevice(rec.deviceId)?.name ?? null,
    inherited: rec.deviceId !== d.id,
    configDigest: rec.configDigest,
    manifestDigest: rec.manifestDigest,
    source: rec.source,
    loaded: new Date(Number(rec.loadedNs / 1_000_000n)).toISOString(),
    config,
    layers: diffIds.map((diffId, i) => {
      const dev = layerDevices(pool, chain[i]!).map((id) => pool.getDevice(id)).find((x) => x !== undefined && x.state === 'active');
      return { diffId, chainId: chain[i]!, device: dev?.name ?? null };
    }),
  };
}

/**
 * Remove the layer devices below a removed device that nothing needs any more: from
 * `below` down, while it is a layer device and nothing but devices being removed
 * (`gone`) sits on it. A deletion may be deferred (a device on it waits for its mount).
 */
function collectLayers(pool: Pool, below: DeviceInfo | undefined, gone: Set<DevId>): RmResult['layers'] {
  const out: RmResult['layers'] = [];
  for (let p = below; p !== undefined && isLayerDevice(pool, p.id) && p.state === 'active'; ) {
    const users = pool.childrenOf(p.id).filter((c) => !gone.has(c.id) && c.state === 'active');
    if (users.length > 0) break;
    const next = topology(pool).parent.get(p.id);
    out.push({ name: p.name, result: pool.deleteDevice(p.id) });
    gone.add(p.id);
    p = next;
  }
  return out;
}

function noSuchDevice(op: string, name: string): Error {
  return fail('ENOENT', op, name, `no image or container named '${name}' (see \`thinfs ls\`)`);
}

function exists(op: string, name: string): Error {
  return fail('EEXIST', op, name, `an image or container named '${name}' exists`);
}


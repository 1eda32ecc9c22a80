/**
 * Saving an image (`thinfs save NAME DEST`): its layers, config and manifest written as
 * an OCI image layout (oci:DIR[:TAG]), a tar of one (oci-archive:FILE[:TAG]) or a docker
 * archive (docker-archive:FILE[:REF]).
 *
 * Layers. Every layer in the device's snapshot chain, bottom first, becomes one layer
 * tar, written by export.ts: the bottom one whole, each other one as its changes over
 * the layers below, with OCI whiteouts (`--diff` of `thinfs export`). The empty layer of
 * an image device (load.ts) adds nothing and is skipped; so a loaded image saves with as
 * many layers as it was loaded with, and an image committed from a container of it saves
 * with one more per commit. Names are byte-exact (export.ts). The tars are thinfs's own
 * bytes, not the ones loaded, so each layer gets its own diffID; the config's
 * rootfs.diff_ids say so, and its history gains an entry per committed layer. When a
 * layer device is saved, the chain ID of the tar written for it is recorded too
 * (image-store.ts), so loading the saved image back adds no layer data.
 *
 * The config is the one loaded (everything kept: Entrypoint, Cmd, Env, WorkingDir,
 * User, Labels, history...) with the new diff_ids; an image that was imported layer by
 * layer (no config) gets a minimal one. OCI layers are gzip-compressed (as skopeo writes
 * them), docker archive layers are plain tars (as docker save writes them).
 *
 * Failure: nothing at DEST changes. Archives are written to a temporary file beside DEST
 * and renamed over it; in a layout directory the blobs (content-addressed, harmless) are
 * written first and index.json last, replaced by rename; a layout directory this save
 * created is removed again.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { fail, isThinfsError, type ErrnoCode } from '../errors.js';
import { Filesystem } from '../fs/index.js';
import { logger } from '../log.js';
import type { DevId, DeviceInfo, Pool } from '../pool/index.js';
import { ArchiveWriter } from './archive-writer.js';
import { exportLayer } from './export.js';
import {
  chainIds,
  chainIdsOfDevice,
  imageOf,
  imageOfDevice,
  insertLayer,
  isLayerDevice,
  prepareImageTables,
  resolveImageName,
  sha256Digest,
  type Digest,
} from './image-store.js';
import { CONTAINERD_NAME, MEDIA, REF_NAME, indexOf, type Descriptor, type ImageConfig, type OciIndex } from './oci.js';
import { parseImageSpec, type Transport } from './sources.js';

const log = logger('layers');

export interface SaveOptions {
  /** The image: a device name or an image reference. */
  name: string;
  /** DEST in transport syntax, with an absolute path. */
  dest: string;
  /** Where layer tars wait before they go into an archive (the pool root's tmp/). */
  tmpDir: string;
}

export interface SavedLayer {
  /** The device whose layer this is. */
  device: string;
  diffId: Digest;
  /** The blob: the gzip'ed tar (OCI) or the tar itself (docker archive). */
  digest: Digest;
  sizeBytes: number;
  /** A layer committed on top of the image it came from. */
  committed: boolean;
}

export interface SaveResult {
  name: string;
  reference: string;
  dest: string;
  format: Transport;
  /** The tag (OCI) or RepoTag (docker archive) written. */
  tag: string;
  layers: SavedLayer[];
  configDigest: Digest;
  manifestDigest: Digest | null;
  elapsedMs: number;
}

interface Written {
  owner: DeviceInfo;
  file: string;
  diffId: Digest;
  digest: Digest;
  sizeBytes: number;
}

/** Save image `opts.name` to `opts.dest`. See the top of this file. */
export async function saveImage(pool: Pool, opts: SaveOptions): Promise<SaveResult> {
  const started = Date.now();
  const spec = parseImageSpec(opts.dest, 'save');
  if (spec.transport === undefined) {
    throw fail('EINVAL', 'save', opts.dest, 'say which format to write: oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF]');
  }
  const dev = resolveImageName(pool, opts.name);
  if (dev === undefined) throw fail('ENOENT', 'save', opts.name, `no image named '${opts.name}' (see \`thinfs ls\`)`);
  if (dev.state === 'deferred') throw fail('ENOENT', 'save', opts.name, `'${opts.name}' is being deleted`);
  if (!dev.readOnly) {
    throw fail('EINVAL', 'save', opts.name, `'${dev.name}' is ${dev.kind === 'container' ? 'a container' : 'an incomplete image'}; save an image (\`thinfs commit ${dev.name} NEW-IMAGE\` makes one of a container)`);
  }
  const rec = imageOf(pool, dev);
  const owners = layerOwners(pool, dev);
  const reference = rec !== undefined && imageOfDevice(pool, dev.id) !== undefined ? rec.reference : dev.name;
  const tag = spec.ref ?? (spec.transport === 'docker-archive' ? reference : tagOf(reference));
  const oci = spec.transport !== 'docker-archive';

  const layout = spec.transport === 'oci' ? prepareLayoutDir(spec.path) : undefined;
  const blobDir = layout !== undefined ? path.join(layout.dir, 'blobs', 'sha256') : opts.tmpDir;
  fs.mkdirSync(blobDir, { recursive: true, mode: 0o700 });
  const written: Written[] = [];
  try {
    for (let i = 0; i < owners.length; i++) written.push(await writeLayer(pool, owners[i]!, i === 0, oci, blobDir, layout !== undefined));
    const config = newConfig(pool, baseConfig(rec?.configBytes), owners, written);
    const configBytes = Buffer.from(JSON.stringify(config));
    const configDigest = sha256Digest(configBytes);
    let manifestDigest: Digest | null = null;
    if (oci) {
      const manifest = {
        schemaVersion: 2,
        mediaType: MEDIA.ociManifest,
        config: { mediaType: MEDIA.ociConfig, digest: configDigest, size: configBytes.length },
        layers: written.map((w) => ({ mediaType: MEDIA.ociLayerGzip, digest: w.digest, size: w.sizeBytes })),
      };
      const manifestBytes = Buffer.from(JSON.stringify(manifest));
      manifestDigest = sha256Digest(manifestBytes);
      const desc: Descriptor = {
        mediaType: MEDIA.ociManifest,
        digest: manifestDigest,
        size: manifestBytes.length,
        annotations: { [REF_NAME]: tag, ...(spec.ref === undefined ? { [CONTAINERD_NAME]: reference } : {}) },
      };
      if (layout !== undefined) await finishLayout(layout, written, { configBytes, configDigest, manifestBytes, manifestDigest, desc });
      else await writeArchive(spec.path, async (a) => {
        await a.buffer('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
        await a.buffer('index.json', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [desc] } satisfies OciIndex)));
        await a.dir('blobs');
        await a.dir('blobs/sha256');
        await a.buffer(`blobs/sha256/${hex(configDigest)}`, configBytes);
        await a.buffer(`blobs/sha256/${hex(manifestDigest!)}`, manifestBytes);
        for (const w of uniqueBlobs(written)) await a.file(`blobs/sha256/${hex(w.digest)}`, w.file, w.sizeBytes);
      });
    } else {
      const manifest = [{ Config: `${hex(configDigest)}.json`, RepoTags: [tag], Layers: written.map((w) => `${hex(w.diffId)}.tar`) }];
      await writeArchive(spec.path, async (a) => {
        await a.buffer(`${hex(configDigest)}.json`, configBytes);
        for (const w of uniqueBlobs(written)) await a.file(`${hex(w.diffId)}.tar`, w.file, w.sizeBytes);
        await a.buffer('manifest.json', Buffer.from(JSON.stringify(manifest)));
      });
    }
    recordAliases(pool, written);
    const result: SaveResult = {
      name: dev.name,
      reference,
      dest: opts.dest,
      format: spec.transport,
      tag,
      layers: written.map((w) => ({ device: w.owner.name, diffId: w.diffId, digest: w.digest, sizeBytes: w.sizeBytes, committed: !isLayerDevice(pool, w.owner.id) })),
      configDigest,
      manifestDigest,
      elapsedMs: Date.now() - started,
    };
    log.info({ image: dev.name, dest: opts.dest, layers: written.length }, 'image saved');
    return result;
  } catch (err) {
    if (layout?.created === true) fs.rmSync(layout.dir, { recursive: true, force: true });
    throw outputError(err, spec.path);
  } finally {
    if (layout === undefined) for (const w of written) fs.rmSync(w.file, { force: true });
  }
}

/** The devices owning the layers of `dev`'s chain, bottom first, without the empty layers of image devices. */
function layerOwners(pool: Pool, dev: DeviceInfo): DeviceInfo[] {
  const owner = new Map(pool.listDevices().map((d) => [d.layerId as number, d]));
  const out: DeviceInfo[] = [];
  for (const layer of [...pool.chainOf(dev.id).layers].reverse()) {
    const o = owner.get(layer as number);
    if (o === undefined) throw fail('EINVAL', 'save', dev.name, 'a layer of its chain belongs to no device (a fork of a container); commit the container and save that image');
    if (imageOfDevice(pool, o.id) !== undefined) continue; // an image device's own layer is empty
    out.push(o);
  }
  return out;
}

/** Export one layer to a blob file in `dir`, hashing the tar (diffID) and the blob. */
async function writeLayer(pool: Pool, owner: DeviceInfo, bottom: boolean, gzip: boolean, dir: string, inLayout: boolean): Promise<Written> {
  const tmp = path.join(dir, `.thinfs-${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
  const tarHash = createHash('sha256');
  const blobHash = createHash('sha256');
  const blob = { bytes: 0 };
  const view = Filesystem.open(pool, owner.id, { readOnly: true });
  try {
    const src = new PassThrough({ highWaterMark: 1024 * 1024 });
    const stages: NodeJS.ReadWriteStream[] = [hashTap(tarHash, { bytes: 0 })];
    if (gzip) stages.push(zlib.createGzip({ level: 6 }));
    stages.push(hashTap(blobHash, blob));
    const done = pipeline([src, ...stages, fs.createWriteStream(tmp, { mode: 0o644, flags: 'wx' })]);
    try {
      await exportLayer(view, src, bottom ? {} : { diff: true, withRoot: true });
      src.end();
    } catch (err) {
      src.destroy(err as Error);
      await done.catch(() => undefined);
      throw err;
    }
    await done;
    const digest = `sha256:${blobHash.digest('hex')}`;
    const diffId = `sha256:${tarHash.digest('hex')}`;
    // In a layout the blob takes its name now (content-addressed); for archives the temp file is copied in.
    let file = tmp;
    if (inLayout) {
      file = path.join(dir, hex(digest));
      fs.renameSync(tmp, file);
    }
    return { owner, file, diffId, digest, sizeBytes: blob.bytes };
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  } finally {
    view.close();
  }
}

function hashTap(hash: Hash, count: { bytes: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      hash.update(chunk);
      count.bytes += chunk.length;
      cb(null, chunk);
    },
  });
}

function baseConfig(configBytes: Buffer | undefined): ImageConfig {
  if (configBytes !== undefined) return JSON.parse(configBytes.toString('utf8')) as ImageConfig;
  return {
    created: new Date().toISOString(),
    architecture: ARCH[process.arch] ?? process.arch,
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: [] },
    history: [],
  };
}

const ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

/**
 * The saved config: the loaded one with the new diff_ids. Its history keeps the loaded
 * entries when they fit the loaded layers, and gains one per committed layer; else it is
 * rebuilt (one entry per layer).
 */
function newConfig(pool: Pool, base: ImageConfig, owners: DeviceInfo[], written: Written[]): ImageConfig {
  const loadedIds = Array.isArray(base.rootfs?.diff_ids) ? base.rootfs.diff_ids : [];
  const loadedChain = chainIds(loadedIds);
  // The loaded layers are the first owners when each answers to the loaded chain ID.
  const fits = loadedIds.length <= owners.length && loadedChain.every((c, i) => chainIdsOfDevice(pool, owners[i]!.id).some((x) => x.chainId === c));
  const kept = fits ? loadedIds.length : 0;
  const history = Array.isArray(base.history) ? base.history : [];
  const nonEmpty = history.filter((h) => h.empty_layer !== true).length;
  const entry = (o: DeviceInfo) => ({
    created: new Date(Number(o.createdNs / 1_000_000n)).toISOString(),
    created_by: isLayerDevice(pool, o.id) ? 'thinfs save' : `thinfs commit (${o.name})`,
  });
  const newHistory = fits && nonEmpty === kept ? [...history, ...owners.slice(kept).map(entry)] : owners.map(entry);
  const extra = owners.length > kept;
  const cfg: ImageConfig = { ...base, rootfs: { type: 'layers', diff_ids: written.map((w) => w.diffId) }, history: newHistory };
  const top = owners[owners.length - 1];
  if (extra || cfg.created === undefined) cfg.created = top === undefined ? new Date().toISOString() : new Date(Number(top.createdNs / 1_000_000n)).toISOString();
  return cfg;
}

/** Record the chain IDs of the tars just written for the layer devices among them (best effort: a read-only pool keeps none). */
function recordAliases(pool: Pool, written: Written[]): void {
  if (pool.readOnlyOpen || pool.mode() !== 'write') return;
  const chain = chainIds(written.map((w) => w.diffId));
  try {
    prepareImageTables(pool);
    pool.atomically('save: layer ids', () => {
      for (let i = 0; i < written.length; i++) {
        const w = written[i]!;
        if (!isLayerDevice(pool, w.owner.id)) break; // above a committed layer, chain IDs lead to no layer device
        insertLayer(pool, chain[i]!, w.owner.id as DevId, w.diffId, 'save');
      }
    });
  } catch (err) {
    log.warn({ err }, 'could not record the saved layers\' chain IDs (loading the saved image back will copy its layers)');
  }
}

/** The tag of a reference (`debian:12` → `12`); `latest` when it has none. */
function tagOf(ref: string): string {
  const last = ref.slice(ref.lastIndexOf('/') + 1);
  const colon = last.lastIndexOf(':');
  return colon < 0 ? 'latest' : last.slice(colon + 1);
}

function hex(d: Digest): string {
  return d.slice('sha256:'.length);
}

/** Blobs once each (two layers may have the same tar: empty ones). */
function uniqueBlobs(written: Written[]): Written[] {
  const seen = new Set<string>();
  return written.filter((w) => !seen.has(w.digest) && seen.add(w.digest) !== undefined);
}

// ---------------------------------------------------------------- destinations

interface LayoutDir {
  dir: string;
  created: boolean;
  index: OciIndex;
}

/** An image layout to add to: existing (its index read), or new (created empty). */
function prepareLayoutDir(dir: string): LayoutDir {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(dir);
  } catch {
    st = undefined;
  }
  if (st === undefined) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    return { dir, created: true, index: { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [] } };
  }
  if (!st.isDirectory()) throw fail('ENOTDIR', 'save', dir, 'oci: takes a directory (for an archive file use oci-archive:)');
  const hasLayout = fs.existsSync(path.join(dir, 'oci-layout'));
  if (!hasLayout) {
    if (fs.readdirSync(dir).length > 0) throw fail('ENOTEMPTY', 'save', dir, 'the directory is not an OCI image layout and not empty; refused');
    return { dir, created: false, index: { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [] } };
  }
  const indexFile = path.join(dir, 'index.json');
  const index = fs.existsSync(indexFile) ? indexOf(fs.readFileSync(indexFile), dir) : { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [] };
  return { dir, created: false, index };
}

/** Write config and manifest blobs, then oci-layout and index.json (the new manifest replaces one of the same tag). */
async function finishLayout(
  layout: LayoutDir,
  _written: Written[],
  docs: { configBytes: Buffer; configDigest: Digest; manifestBytes: Buffer; manifestDigest: Digest; desc: Descriptor },
): Promise<void> {
  const blobs = path.join(layout.dir, 'blobs', 'sha256');
  writeFileAtomic(path.join(blobs, hex(docs.configDigest)), docs.configBytes);
  writeFileAtomic(path.join(blobs, hex(docs.manifestDigest)), docs.manifestBytes);
  const tag = docs.desc.annotations?.[REF_NAME];
  const manifests = layout.index.manifests.filter((m) => m.annotations?.[REF_NAME] !== tag);
  const index = { ...layout.index, manifests: [...manifests, docs.desc] };
  if (!fs.existsSync(path.join(layout.dir, 'oci-layout'))) writeFileAtomic(path.join(layout.dir, 'oci-layout'), Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  writeFileAtomic(path.join(layout.dir, 'index.json'), Buffer.from(JSON.stringify(index)));
}

/** `file` holds `data` after this, or is as before (temp file + fsync + rename). */
function writeFileAtomic(file: string, data: Buffer): void {
  const tmp = `${file}.thinfs-${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fd = fs.openSync(tmp, 'wx', 0o644);
    try {
      fs.writeSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** Write an archive at `file` through `fill`: to a temp file beside it, renamed over it when complete. */
async function writeArchive(file: string, fill: (a: ArchiveWriter) => Promise<void>): Promise<void> {
  const dir = path.dirname(file);
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) throw fail('EISDIR', 'save', file, 'the destination is a directory (for an image layout use oci:DIR)');
  const tmp = path.join(dir, `.${path.basename(file)}.thinfs-${randomBytes(4).toString('hex')}.tmp`);
  const a = new ArchiveWriter(tmp);
  try {
    await fill(a);
    await a.end();
    fs.renameSync(tmp, file);
  } catch (err) {
    a.destroy();
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** Host errors writing the destination as one ThinfsError naming it. */
function outputError(err: unknown, dest: string): unknown {
  if (isThinfsError(err)) return err;
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === 'string' && /^E[A-Z]+$/.test(e.code)) return fail(e.code as ErrnoCode, 'save', dest, `cannot write the destination (${e.message})`);
  return err;
}

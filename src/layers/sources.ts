/**
 * Image sources for `load`, in the transport syntax of skopeo and podman:
 *   oci:DIR[:TAG]              an OCI image layout (oci-layout, index.json, blobs/ALG/HEX)
 *   oci-archive:FILE[:TAG]     a tar of one
 *   docker-archive:FILE[:REF]  `docker save` / `podman save`: manifest.json (Config,
 *                              RepoTags, Layers) and the files it names; REF picks an
 *                              image by tag, or `@N` the Nth (from 0)
 *   PATH                       any of these, recognised by content
 * As in containers/image, the path ends at the first ':' after the transport.
 *
 * Opening a source reads and checks its documents only — index, manifest, config — and
 * plans the layers: for each, its diffID (from the config), the blob's digest and size
 * (from the manifest, when the format has one) and its compression. Checked here: the
 * manifest's digest against the index, the config's against the manifest (or against
 * its file name in a docker archive), the number of layers against the config's
 * diff_ids. Layer blobs are verified while they are loaded (load.ts). A compressed
 * archive (`docker save | gzip`) is first decompressed to a file under `spoolDir`.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { fail, type ErrnoCode } from '../errors.js';
import { DirectoryStore, TarStore, type FileStore } from './archive.js';
import { familiarReference, sha256Digest, type Digest } from './image-store.js';
import {
  CONTAINERD_NAME,
  configOf,
  dockerArchiveManifestOf,
  indexOf,
  manifestOf,
  MEDIA,
  REF_NAME,
  type Descriptor,
  type ImageConfig,
} from './oci.js';
import { decompressed, detectCompression, type Compression } from './streams.js';

export type Transport = 'oci' | 'oci-archive' | 'docker-archive';
export const TRANSPORTS: readonly Transport[] = ['oci', 'oci-archive', 'docker-archive'];

/** A parsed SOURCE or DEST. */
export interface ImageSpec {
  /** Undefined: a plain path, recognised by content. */
  transport: Transport | undefined;
  path: string;
  /** The tag (oci, oci-archive) or reference (docker-archive) after the path. */
  ref?: string;
}

/** One layer to load. */
export interface LayerPlan {
  diffId: Digest;
  /** The blob's digest, when the format names it (OCI); docker archives are checked by diffID only. */
  digest?: Digest;
  /** The blob's size from the manifest (OCI), else from the file. */
  sizeBytes: number;
  mediaType: string;
  compression: Compression | 'auto';
  /** The blob's name in the source. */
  blob: string;
}

/** One image of a source. */
export interface ImagePlan {
  /** Names the source gives it (annotations, RepoTags); may be empty. */
  names: string[];
  configBytes: Buffer;
  config: ImageConfig;
  configDigest: Digest;
  manifestDigest: Digest | null;
  layers: LayerPlan[];
}

/** An opened source: its files, its format and the images chosen from it. */
export interface OpenedSource {
  store: FileStore;
  format: Transport;
  /** The source in transport syntax (`oci-archive:/tmp/x.tar:t`). */
  describe: string;
  /** A name to fall back on (the source's file name without extension). */
  fallbackName: string;
  images: ImagePlan[];
  /** Remove the decompressed copy, if one was made. */
  close(): void;
}

/** Parse `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]` or a plain path. */
export function parseImageSpec(s: string, what: string): ImageSpec {
  for (const t of TRANSPORTS) {
    if (!s.startsWith(`${t}:`)) continue;
    const rest = s.slice(t.length + 1);
    const colon = rest.indexOf(':');
    const p = colon < 0 ? rest : rest.slice(0, colon);
    const ref = colon < 0 ? undefined : rest.slice(colon + 1);
    if (p === '') throw fail('EINVAL', what, s, `no path after '${t}:'`);
    if (ref === '') throw fail('EINVAL', what, s, `empty ${t === 'docker-archive' ? 'reference' : 'tag'} after the path`);
    return { transport: t, path: p, ref };
  }
  if (s === '') throw fail('EINVAL', what, s, 'empty source');
  return { transport: undefined, path: s };
}

/** The spec in transport syntax (a plain path stays plain). */
export function formatImageSpec(spec: ImageSpec): string {
  if (spec.transport === undefined) return spec.path;
  return `${spec.transport}:${spec.path}${spec.ref === undefined ? '' : `:${spec.ref}`}`;
}

/**
 * Open `spec` and plan its image(s): one, chosen by tag or reference when the source holds
 * several (all of a docker archive's when it names none). Refuses with one line what is
 * not an image ("not an image: ..."), a missing tag, and documents that don't check out.
 */
export async function openImageSource(spec: ImageSpec, spoolDir: string): Promise<OpenedSource> {
  const p = spec.path;
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw fail((e.code as ErrnoCode | undefined) ?? 'EIO', 'load', p, `cannot read the source (${e.code === 'ENOENT' ? 'no such file or directory' : e.message})`);
  }
  let spooled: string | undefined;
  const close = () => {
    if (spooled !== undefined) fs.rmSync(spooled, { force: true });
  };
  try {
    let store: FileStore;
    if (st.isDirectory()) {
      if (spec.transport === 'oci-archive' || spec.transport === 'docker-archive') {
        const d = new DirectoryStore(p);
        if (spec.transport === 'oci-archive' || !d.has('manifest.json')) throw fail('EINVAL', 'load', p, `${spec.transport}: is for an archive file, and this is a directory (use oci:${p})`);
        store = d; // an unpacked docker archive
      } else store = new DirectoryStore(p);
    } else if (st.isFile()) {
      if (spec.transport === 'oci') throw fail('ENOTDIR', 'load', p, `oci: takes an image layout directory (for an archive use oci-archive:${p})`);
      let file = p;
      if (detectCompression(readHead(p)) !== 'none') {
        spooled = await decompressToFile(p, spoolDir);
        file = spooled;
      }
      store = TarStore.open(file);
    } else {
      throw fail('EINVAL', 'load', p, 'not an image: the source is neither a directory nor a file');
    }
    const format = spec.transport ?? recognise(store, p, st.isDirectory());
    const fallbackName = path.basename(p).replace(/\.(tar|tar\.gz|tgz|tar\.zst|oci|docker)$/i, '') || 'image';
    const images = format === 'docker-archive' ? dockerImages(store, p, spec.ref) : ociImages(store, p, spec.ref);
    return { store, format, describe: formatImageSpec({ ...spec, transport: format }), fallbackName, images, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** The format of a plain path, by what it holds. */
function recognise(store: FileStore, p: string, isDir: boolean): Transport {
  if (store.has('oci-layout')) return isDir ? 'oci' : 'oci-archive';
  if (store.has('manifest.json')) return 'docker-archive';
  if (isDir) throw fail('EINVAL', 'load', p, 'not an image: a directory without oci-layout or manifest.json (a rootfs? import it with `thinfs import`)');
  throw fail('EINVAL', 'load', p, 'not an image: a tar without oci-layout or manifest.json (a rootfs or layer tar? import it with `thinfs import`)');
}

// ---------------------------------------------------------------- OCI image layout

function blobName(digest: Digest): string {
  const [alg, hex] = digest.split(':');
  return `blobs/${alg}/${hex}`;
}

/** A blob read whole and checked against its descriptor (digest and size). */
function readVerified(store: FileStore, desc: Descriptor, where: string, what: string): Buffer {
  const name = blobName(desc.digest);
  if (!store.has(name)) throw fail('ENOENT', 'load', where, `${what} ${desc.digest} is missing (${name})`);
  const bytes = store.read(name);
  const got = sha256Digest(bytes);
  if (got !== desc.digest) throw fail('EINVAL', 'load', where, `${what} does not match its digest: expected ${desc.digest}, the blob is ${got}; refused`);
  if (bytes.length !== desc.size) throw fail('EINVAL', 'load', where, `${what} is ${bytes.length} bytes, its descriptor says ${desc.size}; refused`);
  return bytes;
}

function ociImages(store: FileStore, where: string, ref: string | undefined): ImagePlan[] {
  if (!store.has('oci-layout')) throw fail('EINVAL', 'load', where, 'not an OCI image layout: no oci-layout file');
  let layout: { imageLayoutVersion?: unknown };
  try {
    layout = JSON.parse(store.read('oci-layout').toString('utf8')) as typeof layout;
  } catch {
    throw fail('EINVAL', 'load', where, 'oci-layout is not JSON');
  }
  if (typeof layout.imageLayoutVersion !== 'string' || !layout.imageLayoutVersion.startsWith('1.')) {
    throw fail('ENOTSUP', 'load', where, `image layout version ${String(layout.imageLayoutVersion)} is not supported (1.x is)`);
  }
  if (!store.has('index.json')) throw fail('EINVAL', 'load', where, 'the image layout has no index.json');
  const index = indexOf(store.read('index.json'), where);
  const nameOf = (d: Descriptor) => d.annotations?.[CONTAINERD_NAME] ?? d.annotations?.[REF_NAME];
  const tags = [...new Set(index.manifests.map((d) => d.annotations?.[REF_NAME]).filter((t): t is string => t !== undefined))];
  let chosen: Descriptor[];
  if (ref !== undefined) {
    chosen = index.manifests.filter((d) => {
      const names = [d.annotations?.[REF_NAME], d.annotations?.[CONTAINERD_NAME]].filter((n): n is string => n !== undefined);
      return names.some((n) => n === ref || familiarReference(n) === familiarReference(ref));
    });
    if (chosen.length === 0) {
      throw fail('ENOENT', 'load', where, `no image tagged '${ref}' in the layout (${tags.length === 0 ? 'it has no tags' : `tags: ${tags.join(', ')}`})`);
    }
  } else {
    chosen = index.manifests;
    if (chosen.length === 0) throw fail('EINVAL', 'load', where, 'the image layout holds no image');
  }
  if (new Set(chosen.map((d) => d.digest)).size > 1) {
    throw fail('EINVAL', 'load', where, `the layout holds ${chosen.length} images (${tags.length === 0 ? 'untagged' : `tags: ${tags.join(', ')}`}); name one, as oci:DIR:TAG`);
  }
  const top = chosen[0]!;
  const names = [...new Set(chosen.map(nameOf).filter((n): n is string => n !== undefined))];
  const manifestDesc = platformManifest(store, top, where);
  const manifestBytes = readVerified(store, manifestDesc, where, 'the manifest');
  const manifest = manifestOf(manifestBytes, where);
  const configBytes = readVerified(store, manifest.config, where, 'the image config');
  const config = configOf(configBytes, where);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw fail('EINVAL', 'load', where, `the manifest lists ${manifest.layers.length} layers, the config ${diffIds.length} diff_ids; refused`);
  }
  const layers = manifest.layers.map((l, i): LayerPlan => {
    const name = blobName(l.digest);
    if (!store.has(name)) throw fail('ENOENT', 'load', where, `layer ${i + 1} ${l.digest} is missing (${name})`);
    return { diffId: diffIds[i]!, digest: l.digest, sizeBytes: l.size, mediaType: l.mediaType, compression: compressionOf(l.mediaType, where, i), blob: name };
  });
  return [{ names, configBytes, config, configDigest: manifest.config.digest, manifestDigest: manifestDesc.digest, layers }];
}

/** The image manifest a descriptor leads to: itself, or the linux manifest of this machine's architecture in a nested index. */
function platformManifest(store: FileStore, desc: Descriptor, where: string, depth = 0): Descriptor {
  if (desc.mediaType !== MEDIA.ociIndex && desc.mediaType !== MEDIA.dockerManifestList) return desc;
  if (depth > 4) throw fail('EINVAL', 'load', where, 'indexes nested too deep');
  const nested = indexOf(readVerified(store, desc, where, 'a nested index'), where, `index ${desc.digest}`);
  const arch = ARCH[process.arch] ?? process.arch;
  const fits = nested.manifests.filter((m) => (m.platform?.os ?? 'linux') === 'linux' && (m.platform?.architecture ?? arch) === arch);
  const pick = fits.find((m) => store.has(blobName(m.digest)));
  if (pick === undefined) {
    const have = nested.manifests.map((m) => `${m.platform?.os ?? '?'}/${m.platform?.architecture ?? '?'}`).join(', ');
    throw fail('ENOENT', 'load', where, `the image has no linux/${arch} manifest in this layout (platforms: ${have || 'none'})`);
  }
  return platformManifest(store, pick, where, depth + 1);
}

const ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

/** The compression a layer media type says; unknown layer types of a tar are told by their bytes. */
function compressionOf(mediaType: string, where: string, i: number): Compression | 'auto' {
  if (/encrypted/.test(mediaType)) throw fail('ENOTSUP', 'load', where, `layer ${i + 1} is encrypted (${mediaType}); decrypt the image first`);
  if (/[+.]gzip$/.test(mediaType)) return 'gzip';
  if (/[+.]zstd$/.test(mediaType)) return 'zstd';
  if (/\.tar$/.test(mediaType) || mediaType === MEDIA.dockerLayer) return 'none';
  if (mediaType === '' || /tar/.test(mediaType)) return 'auto';
  throw fail('ENOTSUP', 'load', where, `layer ${i + 1} has media type ${mediaType}, which is not a layer tar`);
}

// ---------------------------------------------------------------- docker archive

function dockerImages(store: FileStore, where: string, ref: string | undefined): ImagePlan[] {
  if (!store.has('manifest.json')) throw fail('EINVAL', 'load', where, 'not a docker archive: no manifest.json');
  const entries = dockerArchiveManifestOf(store.read('manifest.json'), where);
  let chosen = entries;
  if (ref !== undefined && /^@\d+$/.test(ref)) {
    const n = Number(ref.slice(1));
    if (n >= entries.length) throw fail('ENOENT', 'load', where, `the archive holds ${entries.length} image(s); there is no @${n}`);
    chosen = [entries[n]!];
  } else if (ref !== undefined) {
    chosen = entries.filter((e) => (e.RepoTags ?? []).some((t) => t === ref || familiarReference(t) === familiarReference(ref)));
    if (chosen.length === 0) {
      const tags = entries.flatMap((e) => e.RepoTags ?? []);
      throw fail('ENOENT', 'load', where, `no image tagged '${ref}' in the archive (${tags.length === 0 ? 'it has no tags' : `tags: ${tags.join(', ')}`})`);
    }
  }
  return chosen.map((e) => {
    const configBytes = store.read(e.Config);
    const configDigest = sha256Digest(configBytes);
    const named = /^(?:blobs\/sha256\/|sha256:)?([0-9a-f]{64})(?:\.json)?$/.exec(e.Config.replace(/^\.\//, ''));
    if (named !== null && `sha256:${named[1]}` !== configDigest) {
      throw fail('EINVAL', 'load', where, `the image config ${e.Config} does not match its digest (it is ${configDigest}); refused`);
    }
    const config = configOf(configBytes, where);
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== e.Layers.length) {
      throw fail('EINVAL', 'load', where, `manifest.json lists ${e.Layers.length} layers, the config ${diffIds.length} diff_ids; refused`);
    }
    const layers = e.Layers.map((name, i): LayerPlan => {
      if (!store.has(name)) throw fail('ENOENT', 'load', where, `layer ${i + 1} (${name}) is missing from the archive`);
      return { diffId: diffIds[i]!, sizeBytes: store.size(name), mediaType: MEDIA.dockerLayer, compression: 'auto', blob: name };
    });
    return { names: [...(e.RepoTags ?? [])], configBytes, config, configDigest, manifestDigest: null, layers };
  });
}

// ---------------------------------------------------------------- helpers

function readHead(file: string): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    const n = fs.readSync(fd, b, 0, 4, 0);
    return b.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

/** Decompress archive `file` to a new private file under `dir`; returns its path. */
async function decompressToFile(file: string, dir: string): Promise<string> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const out = path.join(dir, `load-${process.pid}-${randomBytes(4).toString('hex')}.tar`);
  try {
    const input = fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
    await pipeline(Readable.from(decompressed(input, 'auto', file)), fs.createWriteStream(out, { mode: 0o600, flags: 'wx' }));
  } catch (err) {
    fs.rmSync(out, { force: true });
    throw err;
  }
  return out;
}

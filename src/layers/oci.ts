/**
 * The JSON documents of OCI and docker images, as thinfs reads and writes them: the OCI
 * image index and manifest, the image config (OCI image-spec; docker's image JSON is the
 * same document), and docker-archive's manifest.json (`docker save`, `podman save`).
 * Readers validate what they use and refuse the rest with one line; unknown fields are
 * kept (a config is stored byte-exact, its bytes being its digest).
 */
import { fail } from '../errors.js';
import type { Digest } from './image-store.js';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** The annotation naming a manifest in an image layout's index (a tag, or a full reference). */
export const REF_NAME = 'org.opencontainers.image.ref.name';
/** containerd's export writes the full reference here. */
export const CONTAINERD_NAME = 'io.containerd.image.name';

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture?: string; os?: string; variant?: string };
}

export interface OciIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface OciManifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** The image config (OCI image-spec config.md), the fields thinfs reads. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  created?: string;
  author?: string;
  config?: Record<string, unknown>;
  rootfs: { type: string; diff_ids: Digest[] };
  history?: { created?: string; created_by?: string; comment?: string; empty_layer?: boolean; author?: string }[];
  [k: string]: unknown;
}

/** One image of a docker-archive's manifest.json. */
export interface DockerArchiveEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
  LayerSources?: Record<string, Descriptor>;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** True for a `sha256:<64 lowercase hex>` digest (the only algorithm thinfs verifies). */
export function isDigest(s: unknown): s is Digest {
  return typeof s === 'string' && DIGEST.test(s);
}

/** JSON.parse of a document named `what` in `source`; EINVAL naming it when it does not parse or is not an object. */
export function parseJson(bytes: Buffer, source: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw fail('EINVAL', 'load', source, `${what} is not JSON (${(err as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw fail('EINVAL', 'load', source, `${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

/** A descriptor, validated (digest sha256, size a non-negative integer). */
export function descriptorOf(v: unknown, source: string, what: string): Descriptor {
  const d = v as Partial<Descriptor> | null;
  if (typeof d !== 'object' || d === null) throw fail('EINVAL', 'load', source, `${what} is not a descriptor`);
  if (!isDigest(d.digest)) {
    throw fail('ENOTSUP', 'load', source, `${what} has digest '${String(d.digest)}': only sha256 digests are supported`);
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw fail('EINVAL', 'load', source, `${what} has no valid size`);
  return { ...d, mediaType: typeof d.mediaType === 'string' ? d.mediaType : '', digest: d.digest, size: d.size } as Descriptor;
}

/** An image index (index.json or a nested index), validated. */
export function indexOf(bytes: Buffer, source: string, what = 'index.json'): OciIndex {
  const j = parseJson(bytes, source, what);
  if (j.schemaVersion !== 2) throw fail('EINVAL', 'load', source, `${what} has schemaVersion ${String(j.schemaVersion)} (2 expected)`);
  if (!Array.isArray(j.manifests)) throw fail('EINVAL', 'load', source, `${what} has no manifests list`);
  return { ...(j as object), schemaVersion: 2, manifests: j.manifests.map((m, i) => descriptorOf(m, source, `${what} manifest ${i + 1}`)) } as OciIndex;
}

/** An image manifest (OCI, or docker schema 2), validated. */
export function manifestOf(bytes: Buffer, source: string, what = 'the manifest'): OciManifest {
  const j = parseJson(bytes, source, what);
  if (j.schemaVersion !== 2) throw fail('ENOTSUP', 'load', source, `${what} has schemaVersion ${String(j.schemaVersion)}: only schema 2 manifests are supported`);
  if (j.mediaType === MEDIA.ociIndex || j.mediaType === MEDIA.dockerManifestList || Array.isArray(j.manifests)) {
    throw fail('EINVAL', 'load', source, `${what} is an index, not an image manifest`);
  }
  if (!Array.isArray(j.layers)) throw fail('EINVAL', 'load', source, `${what} has no layers list`);
  return {
    ...(j as object),
    schemaVersion: 2,
    config: descriptorOf(j.config, source, `${what}'s config`),
    layers: j.layers.map((l, i) => descriptorOf(l, source, `${what}'s layer ${i + 1}`)),
  } as OciManifest;
}

/** An image config, validated: a layers rootfs with sha256 diffIDs. */
export function configOf(bytes: Buffer, source: string): ImageConfig {
  const j = parseJson(bytes, source, 'the image config');
  const rootfs = j.rootfs as { type?: unknown; diff_ids?: unknown } | undefined;
  if (typeof rootfs !== 'object' || rootfs === null || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) {
    throw fail('EINVAL', 'load', source, 'the image config has no rootfs of type layers with diff_ids');
  }
  for (const d of rootfs.diff_ids) {
    if (!isDigest(d)) throw fail('ENOTSUP', 'load', source, `the image config has diffID '${String(d)}': only sha256 digests are supported`);
  }
  if (j.config !== undefined && j.config !== null && (typeof j.config !== 'object' || Array.isArray(j.config))) {
    throw fail('EINVAL', 'load', source, "the image config's config field is not an object");
  }
  return j as unknown as ImageConfig;
}

/** The execution part (`config`: Entrypoint, Cmd, Env, WorkingDir, User, ...) of a stored config; {} when it has none. */
export function execConfigOf(configBytes: Buffer): Record<string, unknown> {
  let j: unknown;
  try {
    j = JSON.parse(configBytes.toString('utf8'));
  } catch {
    return {};
  }
  const c = (j as { config?: unknown } | null)?.config;
  return typeof c === 'object' && c !== null && !Array.isArray(c) ? (c as Record<string, unknown>) : {};
}

/** docker-archive's manifest.json, validated. */
export function dockerArchiveManifestOf(bytes: Buffer, source: string): DockerArchiveEntry[] {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw fail('EINVAL', 'load', source, `manifest.json is not JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(v) || v.length === 0) throw fail('EINVAL', 'load', source, 'manifest.json lists no image');
  return v.map((e: Partial<DockerArchiveEntry>, i) => {
    if (typeof e?.Config !== 'string' || !Array.isArray(e.Layers) || !e.Layers.every((l) => typeof l === 'string')) {
      throw fail('EINVAL', 'load', source, `manifest.json image ${i + 1} has no Config and Layers`);
    }
    const tags = Array.isArray(e.RepoTags) ? e.RepoTags.filter((t): t is string => typeof t === 'string') : [];
    return { ...e, Config: e.Config, Layers: e.Layers, RepoTags: tags } as DockerArchiveEntry;
  });
}

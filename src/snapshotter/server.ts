/**
 * The gRPC face of the snapshotter: containerd.services.snapshots.v1.Snapshots on a unix
 * socket, each method mechanical — decode the request, one call to the backend (the pool's
 * daemon: backend.ts), encode the answer. The one translation of thinfs errors into gRPC
 * status codes lives here (`statusOf`): the codes containerd's errdefs.FromGRPC turns back
 * into ErrAlreadyExists, ErrNotFound, ErrFailedPrecondition, ErrInvalidArgument, which its
 * metadata store, unpacker and garbage collector act on.
 *
 * The socket: a stale file nobody answers on is replaced; one a live server answers on is
 * EADDRINUSE (two snapshotters must not share an address). Mode 0600: containerd runs as
 * the same user (root, or the user of rootless containerd).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { fail, isThinfsError } from '../errors.js';
import { logger } from '../log.js';
import { snapshotsService } from './proto.js';
import type { SnapshotInfo, SnapshotMount, SnapshotUsage } from './snapshots/index.js';

const log = logger('snapshotter');

/** Where the snapshot operations run: `call(op, args)` runs a daemon operation (daemon/ops/snapshot-ops.ts). */
export interface SnapshotBackend {
  call<R>(op: string, args: object): Promise<R>;
}

/** A serving Snapshots endpoint. */
export interface SnapshotServer {
  address: string;
  /** Stop accepting; wait up to `graceMs` for calls in flight, then cut them off. */
  close(graceMs?: number): Promise<void>;
}

/** Longest path a sockaddr_un takes on Linux (108 bytes with the NUL). */
const SUN_PATH_MAX = 107;
/** Infos per List response message (containerd's own server sends batches too). */
const LIST_BATCH = 100;

/** Serve the Snapshots service on unix socket `address` (absolute), backed by `backend`. */
export async function listenSnapshots(address: string, backend: SnapshotBackend): Promise<SnapshotServer> {
  if (!path.isAbsolute(address)) throw fail('EINVAL', 'snapshotter', address, 'the socket address must be an absolute path');
  if (Buffer.byteLength(address) > SUN_PATH_MAX) throw fail('ENAMETOOLONG', 'snapshotter', address, `a unix socket path takes at most ${SUN_PATH_MAX} bytes`);
  fs.mkdirSync(path.dirname(address), { recursive: true });
  await replaceStaleSocket(address);
  const server = new grpc.Server();
  server.addService(snapshotsService(), handlers(backend));
  // The socket is born 0600 (umask while it is bound), not chmod'ed after: no moment in which
  // another user could connect, and nobody sees it with other bits.
  const umask = process.umask(0o177);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${address}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  )
    .catch((err: Error) => {
      throw fail('EADDRINUSE', 'snapshotter', address, `cannot listen (${err.message})`);
    })
    .finally(() => process.umask(umask));
  fs.chmodSync(address, 0o600);
  return {
    address,
    close: (graceMs = 5000) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }).finally(() => fs.rmSync(address, { force: true })),
  };
}

// ---------------------------------------------------------------- wire types

interface WireTimestamp {
  seconds: string | number;
  nanos: number;
}

type WireKind = 'UNKNOWN' | 'VIEW' | 'ACTIVE' | 'COMMITTED';

interface WireInfo {
  name: string;
  parent: string;
  kind: WireKind;
  created_at: WireTimestamp | null;
  updated_at: WireTimestamp | null;
  labels: Record<string, string>;
}

interface WireMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

interface KeyRequest {
  key: string;
}
interface CreateRequest extends KeyRequest {
  parent: string;
  labels: Record<string, string>;
}
interface CommitRequest extends CreateRequest {
  name: string;
}
interface UpdateRequest {
  info: WireInfo | null;
  update_mask: { paths: string[] } | null;
}
interface ListRequest {
  filters: string[];
}

const KINDS: Record<SnapshotInfo['kind'], WireKind> = { active: 'ACTIVE', view: 'VIEW', committed: 'COMMITTED' };

function timestamp(ns: string): WireTimestamp {
  const n = BigInt(ns);
  return { seconds: (n / 1_000_000_000n).toString(), nanos: Number(n % 1_000_000_000n) };
}

function wireInfo(i: SnapshotInfo): WireInfo {
  return { name: i.name, parent: i.parent, kind: KINDS[i.kind], created_at: timestamp(i.createdNs), updated_at: timestamp(i.updatedNs), labels: i.labels };
}

function wireMounts(ms: SnapshotMount[]): { mounts: WireMount[] } {
  return { mounts: ms.map((m) => ({ type: m.type, source: m.source, target: '', options: m.options })) };
}

// ---------------------------------------------------------------- handlers

function handlers(backend: SnapshotBackend): grpc.UntypedServiceImplementation {
  const create = (op: string) => async (r: CreateRequest) =>
    wireMounts(await backend.call<SnapshotMount[]>(op, { key: r.key, parent: r.parent, labels: r.labels ?? {} }));
  return {
    Prepare: unary('Prepare', create('snapshotPrepare')),
    View: unary('View', create('snapshotView')),
    Mounts: unary('Mounts', async (r: KeyRequest) => wireMounts(await backend.call<SnapshotMount[]>('snapshotMounts', { key: r.key }))),
    Commit: unary('Commit', async (r: CommitRequest) => {
      await backend.call('snapshotCommit', { name: r.name, key: r.key, labels: r.labels ?? {}, parent: r.parent });
      return {};
    }),
    Remove: unary('Remove', async (r: KeyRequest) => {
      await backend.call('snapshotRemove', { key: r.key });
      return {};
    }),
    Stat: unary('Stat', async (r: KeyRequest) => ({ info: wireInfo(await backend.call<SnapshotInfo>('snapshotStat', { key: r.key })) })),
    Update: unary('Update', async (r: UpdateRequest) => {
      if (r.info === null) throw fail('EINVAL', 'update', undefined, 'the request has no info');
      const info = await backend.call<SnapshotInfo>('snapshotUpdate', { name: r.info.name, labels: r.info.labels ?? {}, paths: r.update_mask?.paths ?? [] });
      return { info: wireInfo(info) };
    }),
    Usage: unary('Usage', async (r: KeyRequest) => {
      const u = await backend.call<SnapshotUsage>('snapshotUsage', { key: r.key });
      return { size: String(u.size), inodes: String(u.inodes) };
    }),
    Cleanup: unary('Cleanup', async () => {
      await backend.call('snapshotCleanup', {});
      return {};
    }),
    List: (call: grpc.ServerWritableStream<ListRequest, { info: WireInfo[] }>) => {
      const t0 = Date.now();
      backend
        .call<SnapshotInfo[]>('snapshotList', { filters: call.request.filters ?? [] })
        .then((infos) => {
          for (let i = 0; i < infos.length; i += LIST_BATCH) call.write({ info: infos.slice(i, i + LIST_BATCH).map(wireInfo) });
          call.end();
          log.debug({ method: 'List', filters: call.request.filters, count: infos.length, ms: Date.now() - t0 }, 'snapshots call');
        })
        .catch((err: unknown) => {
          const status = statusOf(err);
          logFailure('List', call.request, status, err, t0);
          call.emit('error', status);
        });
    },
  };
}

/** A unary handler: one backend call; its error answered with its status. */
function unary<Q extends object, R>(method: string, fn: (req: Q) => Promise<R>): grpc.handleUnaryCall<Q, R> {
  return (call, callback) => {
    const t0 = Date.now();
    fn(call.request).then(
      (res) => {
        log.debug({ method, ...keys(call.request), ms: Date.now() - t0 }, 'snapshots call');
        callback(null, res);
      },
      (err: unknown) => {
        const status = statusOf(err);
        logFailure(method, call.request, status, err, t0);
        callback(status);
      },
    );
  };
}

function keys(req: object): Record<string, unknown> {
  const r = req as Partial<CommitRequest> & Partial<UpdateRequest>;
  return { key: r.key, name: r.name ?? r.info?.name, parent: r.parent || undefined };
}

/** Codes containerd asks for and acts on: not failures of thinfs. */
const EXPECTED = new Set([grpc.status.NOT_FOUND, grpc.status.ALREADY_EXISTS, grpc.status.FAILED_PRECONDITION, grpc.status.INVALID_ARGUMENT]);

function logFailure(method: string, req: object, status: grpc.StatusObject, err: unknown, t0: number): void {
  const fields = { method, ...keys(req), code: grpc.status[status.code], ms: Date.now() - t0 };
  if (EXPECTED.has(status.code)) log.debug({ ...fields, reason: status.details }, 'snapshots call refused');
  else log.error({ ...fields, err }, 'snapshots call failed');
}

// ---------------------------------------------------------------- errors

/** errno -> gRPC code, as containerd reads them (errdefs.FromGRPC). */
const CODES: Partial<Record<string, grpc.status>> = {
  EEXIST: grpc.status.ALREADY_EXISTS,
  ENOENT: grpc.status.NOT_FOUND,
  EINVAL: grpc.status.INVALID_ARGUMENT,
  ENAMETOOLONG: grpc.status.INVALID_ARGUMENT,
  // The snapshot is in the wrong state for this: children, a view in use, not active.
  ENOTEMPTY: grpc.status.FAILED_PRECONDITION,
  EBUSY: grpc.status.FAILED_PRECONDITION,
  EROFS: grpc.status.FAILED_PRECONDITION,
  ENOSPC: grpc.status.RESOURCE_EXHAUSTED,
  EDQUOT: grpc.status.RESOURCE_EXHAUSTED,
  EACCES: grpc.status.PERMISSION_DENIED,
  EPERM: grpc.status.PERMISSION_DENIED,
  ENOTSUP: grpc.status.UNIMPLEMENTED,
  // The daemon can't be reached (yet): containerd may try again.
  ENOTCONN: grpc.status.UNAVAILABLE,
  ECONNREFUSED: grpc.status.UNAVAILABLE,
  ETIMEDOUT: grpc.status.UNAVAILABLE,
};

/** The gRPC status for `err`: its errno's code (UNKNOWN for anything else), with its message. */
export function statusOf(err: unknown): grpc.StatusObject {
  const code = isThinfsError(err) ? CODES[err.code] : undefined;
  const details = err instanceof Error ? err.message : String(err);
  return { code: code ?? grpc.status.UNKNOWN, details, metadata: new grpc.Metadata() };
}

/** Remove a socket file nobody answers on; EADDRINUSE when a server answers there. */
async function replaceStaleSocket(address: string): Promise<void> {
  if (!fs.existsSync(address)) return;
  const live = await new Promise<boolean>((resolve) => {
    const s = net.createConnection({ path: address });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (live) throw fail('EADDRINUSE', 'snapshotter', address, 'another server answers on this socket (is a thinfs snapshotter already running?)');
  if (!fs.lstatSync(address).isSocket()) throw fail('EEXIST', 'snapshotter', address, 'the address exists and is not a socket');
  fs.rmSync(address);
}

/**
 * `thinfs snapshotter`: thinfs as containerd's storage — a proxy snapshotter plugin serving
 * containerd.services.snapshots.v1.Snapshots over gRPC on a unix socket (like
 * fuse-overlayfs-snapshotter and stargz-snapshotter), with the pool's daemon doing the work.
 *
 *   serveSnapshotter({root, address})   serve until SIGTERM/SIGINT; resolves with the exit status
 *   listenSnapshots(address, backend)    the gRPC server alone (server.ts), on any backend
 *   daemonBackend(root)                  the backend that runs each call in the pool's daemon (backend.ts: why a process of its own)
 *   statusOf(err)                        the errno -> gRPC status translation
 *   snapshotsService(), snapshotsClient()  the service definition from proto/ (and a client, for tools and tests)
 *
 * The semantics (active, view, committed; keys to devices; labels) are ./snapshots/, which
 * runs in the daemon.
 */
import * as path from 'node:path';
import { runOp } from '../daemon/client.js';
import { logger } from '../log.js';
import { daemonBackend } from './backend.js';
import { listenSnapshots } from './server.js';

export { daemonBackend } from './backend.js';
export type { DaemonBackendOptions } from './backend.js';
export { listenSnapshots, statusOf } from './server.js';
export type { SnapshotBackend, SnapshotServer } from './server.js';
export { snapshotsClient, snapshotsService } from './proto.js';

const log = logger('snapshotter');

/** ROOT/run/snapshotter.sock. */
export function defaultAddress(root: string): string {
  return path.join(root, 'run', 'snapshotter.sock');
}

/** What `thinfs snapshotter` serves, where. */
export interface SnapshotterOptions {
  root: string;
  /** The unix socket to serve on (default ROOT/run/snapshotter.sock). */
  address?: string;
  /** The log level of a daemon the snapshotter starts. */
  logLevel?: string;
}

/**
 * Serve containerd until SIGTERM or SIGINT: then stop accepting, let the calls in flight
 * finish (5 s at most), remove the socket and resolve 0. The pool's daemon and its views
 * stay: running containers keep their root file systems.
 */
export async function serveSnapshotter(opts: SnapshotterOptions): Promise<number> {
  const address = path.resolve(opts.address ?? defaultAddress(opts.root));
  // A pool that is missing, not ours or damaged fails here, with the pool's own message.
  await runOp(opts.root, 'info');
  const server = await listenSnapshots(address, daemonBackend(opts.root, { logLevel: opts.logLevel }));
  log.info({ root: opts.root, address, pid: process.pid }, 'thinfs snapshotter serving containerd');
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal: sig }, 'thinfs snapshotter stopping');
      server.close().then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ err }, 'stopping the snapshotter failed');
          resolve(1);
        },
      );
    };
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => stop(sig));
  });
}

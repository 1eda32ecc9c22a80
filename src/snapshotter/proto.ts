/**
 * containerd's Snapshots service definition, read from the .proto files kept in the
 * project (proto/README.md: where they come from, their licences) with
 * @grpc/proto-loader. Field names are kept as in the .proto (`created_at`, `update_mask`),
 * enums are their names ('ACTIVE'), 64-bit integers arrive as decimal strings.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fail } from '../errors.js';

/** The project's proto/ directory, from the sources (src/snapshotter) or the build (dist/src/snapshotter). */
function protoDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of [['..', '..'], ['..', '..', '..']]) {
    const dir = path.resolve(here, ...up, 'proto');
    if (fs.existsSync(path.join(dir, 'containerd', 'services', 'snapshots', 'v1', 'snapshots.proto'))) return dir;
  }
  throw fail('ENOENT', 'snapshotter', path.resolve(here, '..', '..', 'proto'), 'the containerd .proto files are missing from the thinfs installation');
}

let cached: grpc.ServiceDefinition | undefined;

/** containerd.services.snapshots.v1.Snapshots. */
export function snapshotsService(): grpc.ServiceDefinition {
  if (cached !== undefined) return cached;
  const dir = protoDir();
  const def = protoLoader.loadSync('services/snapshots/v1/snapshots.proto', {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [path.join(dir, 'containerd'), dir],
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    containerd: { services: { snapshots: { v1: { Snapshots: grpc.ServiceClientConstructor } } } };
  };
  cached = pkg.containerd.services.snapshots.v1.Snapshots.service;
  return cached;
}

/** A client of the service (tests, tools): `new (snapshotsClient())('unix:/path', grpc.credentials.createInsecure())`. */
export function snapshotsClient(): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(snapshotsService(), 'Snapshots');
}

/**
 * A run's own directory, ROOT/run/containers/ID: /etc/hosts, /etc/hostname and
 * /etc/resolv.conf for the container (bound over the image's files, as podman does, so
 * nothing is written into the image), and the OCI runtime bundle's config.json. It
 * lives as long as the run; `remove` deletes it.
 *
 * The container shares the host's network (`podman run --network host`): its
 * resolv.conf is the host's and its hosts file the host's plus a line for its hostname.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../errors.js';

/** The container files a run replaces with its own. */
export const RUN_FILES = ['/etc/hosts', '/etc/hostname', '/etc/resolv.conf'] as const;

/** The files a run binds into the container: container path -> host file. */
export interface RunFiles {
  dir: string;
  binds: { destination: string; source: string }[];
  /** Delete the directory (never throws). */
  remove(): void;
}

/** Create the run directory of container `id` under pool root `root`. */
export function createRunDir(root: string, id: string, hostname: string): RunFiles {
  const parent = path.join(root, 'run', 'containers');
  const dir = path.join(parent, id);
  try {
    fs.mkdirSync(parent, { recursive: true, mode: 0o700 });
    fs.rmSync(dir, { recursive: true, force: true }); // a run killed before it could clean up
    fs.mkdirSync(dir, { mode: 0o755 });
    const text: Record<(typeof RUN_FILES)[number], string> = {
      '/etc/hosts': hostsFile(hostname),
      '/etc/hostname': `${hostname}\n`,
      '/etc/resolv.conf': hostFile('/etc/resolv.conf') ?? '',
    };
    const binds = RUN_FILES.map((destination) => {
      const source = path.join(dir, path.basename(destination));
      fs.writeFileSync(source, text[destination], { mode: 0o644 });
      return { destination, source };
    });
    return { dir, binds, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw fail('EIO', 'run', dir, `cannot write the run directory (${(err as Error).message})`);
  }
}

function hostsFile(hostname: string): string {
  const host = hostFile('/etc/hosts') ?? '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n';
  const named = host.split('\n').some((l) => l.replace(/#.*/, '').trim().split(/\s+/).slice(1).includes(hostname));
  return named ? host : `${host}${host.endsWith('\n') || host === '' ? '' : '\n'}127.0.1.1\t${hostname}\n`;
}

function hostFile(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

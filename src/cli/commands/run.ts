/**
 * `thinfs run IMAGE|CONTAINER [--name NAME] [--rm] [-- CMD ARGS...]`: the rootless
 * convenience. From an image it creates a new container (or uses the given container),
 * mounts it, runs CMD (default /bin/sh) in new user + mount + pid namespaces that map
 * the caller to root (`unshare --user --map-root-user --mount --pid --fork`), chrooted
 * into the view, and unmounts afterwards. `--rm` deletes a container it created.
 *
 * Run as a non-root user, the mount shows stored uid/gid 0 as the caller
 * (`--uid-map 0:UID:1 --gid-map 0:GID:1`), so inside the namespace — where the caller
 * is root — the image's root-owned files are root's and writable as on a normal rootfs.
 *
 * The steps are the CLI's own commands, run as child processes of this one (which serves
 * no mount itself, so they can't deadlock): one implementation of mount, create and rm.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { InspectResult } from '../../daemon/ops/index.js';
import { fail } from '../../errors.js';
import { globals } from '../globals.js';

interface RunOptions {
  name?: string;
  rm?: boolean;
  nosuid?: boolean;
}

/** Add `thinfs run` to the program. */
export function register(program: Command): void {
  program
    .command('run')
    .description('run a command rootless in a container: new user+mount+pid namespaces mapping you to root, chrooted into the mounted view')
    .argument('<name>', 'an image (a new container is created from it) or an existing container')
    .argument('[cmd...]', 'command and arguments after -- (default: /bin/sh)')
    .option('--name <container>', 'name of the container to create from an image (default: run-<random>)')
    .option('--rm', 'delete the container afterwards if run created it')
    .option('--nosuid', 'mount the view nosuid (as root; a rootless mount always is)')
    .action(async (name: string, cmd: string[], o: RunOptions, command: Command) => {
      const { root } = globals(command);
      const code = await run(root, name, cmd.length > 0 ? cmd : ['/bin/sh'], o, command);
      process.exitCode = code;
    });
}

async function run(root: string, name: string, cmd: string[], o: RunOptions, command: Command): Promise<number> {
  const target = await runOp<InspectResult>(root, 'inspect', { name });
  const isImage = target.readOnly || target.kind !== 'container';
  let container = name;
  if (isImage) {
    container = o.name ?? `run-${randomBytes(4).toString('hex')}`;
    await self(root, command, ['create', container, name]);
  } else if (o.name !== undefined) {
    throw fail('EINVAL', 'run', name, '--name only applies when running an image');
  }
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const maps = uid === 0 ? [] : ['--uid-map', `0:${uid}:1`, '--gid-map', `0:${gid}:1`];
  await self(root, command, ['mount', container, ...maps, ...(o.nosuid ? ['--nosuid'] : [])]);
  const mnt = path.join(root, 'mnt', container);
  let status = 1;
  try {
    status = await exec('unshare', ['--user', '--map-root-user', '--mount', '--pid', '--fork', 'chroot', mnt, ...cmd], 'inherit');
  } finally {
    await self(root, command, ['umount', container]);
    if (isImage && o.rm) await self(root, command, ['rm', container]);
  }
  return status;
}

/** Run this CLI with `argv` against the same root; its stderr passes through. */
async function self(root: string, command: Command, argv: string[]): Promise<void> {
  const logLevel = command.optsWithGlobals<{ logLevel?: string }>().logLevel;
  const extra = logLevel === undefined ? [] : ['--log-level', logLevel];
  const code = await exec(process.execPath, [process.argv[1]!, '--root', root, ...extra, ...argv], ['ignore', 'ignore', 'inherit']);
  if (code !== 0) throw fail('EIO', 'run', argv.join(' '), `\`thinfs ${argv[0]}\` failed (exit ${code})`);
}

function exec(file: string, argv: string[], stdio: 'inherit' | ('ignore' | 'inherit')[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio });
    child.on('error', (err) => reject(fail('ENOENT', 'run', file, `cannot start ${file}: ${err.message}`)));
    child.on('exit', (code, signal) => resolve(code ?? (signal === null ? 1 : 128 + 9)));
  });
}

/**
 * `thinfs run IMAGE|CONTAINER [--name N] [--rm] [-e KEY=VAL]... [-w DIR] [-u USER[:GROUP]]
 * [--entrypoint CMD] [--hostname H] [--read-only] [--nosuid] [--runtime R] [-- CMD...]`:
 * run a container on a thinfs view, like `podman run`. From an image it creates a new
 * container (or uses the given container), mounts it through the pool's daemon, runs the
 * image config's Entrypoint + Cmd (or CMD) with its Env, WorkingDir and User (-e/-w/-u
 * override) in a container environment (src/run/: /proc, /dev, hostname, /etc files),
 * with runc when installed and namespaces + chroot otherwise; then unmounts, and with
 * `--rm` deletes a container it created. The exit status is the container process's.
 *
 * Run as a non-root user, the mount shows stored uid/gid 0 as the caller
 * (`--uid-map 0:UID:1 --gid-map 0:GID:1`) and the runtime maps the caller to root in a
 * user namespace, so the image's root-owned files are root's and writable as on a normal
 * rootfs. Only that one id is mapped: a rootless container runs as 0:0.
 *
 * Failure contract: every failure prints one line `thinfs: ...` and exits 1; whatever
 * happened, the view is unmounted before the command ends (a busy one is detached with
 * --force), the run directory is gone, and `--rm` has removed a container run created.
 *
 * The view is mounted by the CLI's own `thinfs mount`, run as a child process (it starts
 * the daemon and waits until the view answers); create, umount and rm are the same
 * operations their commands run (daemon/client.ts). This process serves no mount, so
 * none of it can deadlock on the view.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import * as path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { InspectResult, UmountResult } from '../../daemon/ops/index.js';
import { fail, isThinfsError, type ErrnoCode } from '../../errors.js';
import { logger } from '../../log.js';
import {
  chooseRuntime,
  createMountpoints,
  createRunDir,
  missingMountpoints,
  mountpointsOf,
  processSpec,
  runContainer,
  RUNTIME_NAMES,
  validEnvArg,
  validUserSpec,
  type ImageExecConfig,
  type ProcessSpec,
  type RuntimeName,
} from '../../run/index.js';
import { globals } from '../globals.js';

const log = logger('run');

interface RunOptions {
  name?: string;
  rm?: boolean;
  env: string[];
  workdir?: string;
  user?: string;
  entrypoint?: string;
  hostname?: string;
  readOnly?: boolean;
  nosuid?: boolean;
  tty?: boolean;
  runtime: RuntimeName;
}

/** The kernel's limit on a hostname (HOST_NAME_MAX). */
const HOSTNAME_MAX = 64;

/** Add `thinfs run` to the program. */
export function register(program: Command): void {
  program
    .command('run')
    .description('run a container on a thinfs view, like podman run: the image config\'s command, env, workdir and user, with /proc, /dev and a hostname; runc when installed, else namespaces + chroot')
    .argument('<name>', 'an image (a new container is created from it) or an existing container')
    .argument('[cmd...]', "command and arguments after -- (default: the image's Entrypoint + Cmd; /bin/sh for an image without a config)")
    .option('--name <container>', 'name of the container to create from an image (default: run-<random>)')
    .option('--rm', 'delete the container afterwards if run created it')
    .option('-e, --env <KEY=VAL>', 'set an environment variable (KEY alone: take it from this environment); repeatable', envArg, [])
    .option('-w, --workdir <dir>', 'working directory in the container (absolute)', workdirArg)
    .option('-u, --user <user[:group]>', "user to run as, names resolved in the image's /etc/passwd and /etc/group", userArg)
    .option('--entrypoint <cmd>', 'replace the image\'s Entrypoint (a command, or a JSON array; "" clears it) and drop its Cmd')
    .option('--hostname <name>', 'hostname in the container (default: the container name)', hostnameArg)
    .option('-t, --tty', 'give the container a terminal of its own (runc; the chroot runtime always shares yours); sets TERM')
    .option('--read-only', 'mount the container view read-only')
    .option('--nosuid', 'mount the view nosuid (as root; a rootless mount always is)')
    .addOption(new Option('--runtime <runtime>', 'runc, crun (only when runc is missing), or chroot (unshare + chroot); auto picks the first installed').choices(RUNTIME_NAMES).default('auto'))
    .action(async (name: string, cmd: string[], o: RunOptions, command: Command) => {
      const { root } = globals(command);
      process.exitCode = await run(root, name, cmd, o, command);
    });
}

function envArg(text: string, previous: string[]): string[] {
  if (!validEnvArg(text)) throw new InvalidArgumentError('expected KEY=VALUE or KEY');
  return [...previous, text];
}

function workdirArg(text: string): string {
  if (!text.startsWith('/')) throw new InvalidArgumentError('the working directory must be an absolute path');
  return text;
}

function userArg(text: string): string {
  if (!validUserSpec(text)) throw new InvalidArgumentError('expected USER[:GROUP], each a name or a number');
  return text;
}

function hostnameArg(text: string): string {
  if (text === '' || text.length > HOSTNAME_MAX || /[\s\0/]/.test(text)) throw new InvalidArgumentError(`expected a name of 1 to ${HOSTNAME_MAX} characters without spaces`);
  return text;
}

async function run(root: string, name: string, cmd: string[], o: RunOptions, command: Command): Promise<number> {
  if (o.tty === true && process.stdin.isTTY !== true) throw fail('ENOTTY', 'run', undefined, '-t needs a terminal on stdin (the input is not a TTY)');
  const runtime = chooseRuntime(o.runtime);
  if (runtime.note !== undefined) process.stderr.write(`thinfs: warning: ${runtime.note}\n`);
  const entrypoint = o.entrypoint === undefined ? undefined : parseEntrypoint(o.entrypoint);
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const rootless = uid === 0 ? undefined : { uid, gid };

  const target = await runOp<InspectResult>(root, 'inspect', { name });
  const isImage = target.readOnly || target.kind !== 'container';
  if (!isImage && o.name !== undefined) throw fail('EINVAL', 'run', name, '--name only applies when running an image');
  const config = await imageConfig(root, name);
  const container = isImage ? (o.name ?? `run-${randomBytes(4).toString('hex')}`) : name;
  const hostname = o.hostname ?? container.slice(0, HOSTNAME_MAX);
  log.debug({ runtime: runtime.name, image: isImage ? name : undefined, container, config: config !== null }, 'run');

  const signals = new Interrupts();
  try {
    if (isImage) await runOp(root, 'create', { name: container, image: name });
    const view = new View(root, command, container, { readOnly: o.readOnly === true, nosuid: o.nosuid === true, rootless });
    try {
      await view.mount();
      const proc = processSpec(view.mountpoint, config, { cmd, entrypoint, env: o.env, workdir: o.workdir, user: o.user, hostname, tty: o.tty === true });
      if (rootless !== undefined) requireRootlessUser(proc);
      await view.prepare(proc);
      if (signals.caught !== undefined) return signals.status();
      const id = `${container.replace(/[^\w.+-]/g, '_')}-${randomBytes(4).toString('hex')}`;
      const files = createRunDir(root, id, hostname);
      try {
        return await runContainer(runtime, {
          id,
          rootfs: view.mountpoint,
          readOnly: o.readOnly === true,
          hostname,
          process: proc,
          tty: o.tty === true,
          files,
          rootless,
          stateDir: path.join(root, 'run', runtime.name),
        });
      } finally {
        files.remove();
      }
    } finally {
      // Removed while still mounted, the daemon defers the deletion to the unmount: no
      // second opening of the pool racing the daemon's exit.
      try {
        if (isImage && o.rm === true) await runOp(root, 'rm', { name: container });
      } finally {
        await view.umount();
      }
    }
  } finally {
    signals.stop();
  }
}

/** The image config of `name` (an image, or a container: its image's), null when it has none or the pool can't tell. */
async function imageConfig(root: string, name: string): Promise<ImageExecConfig | null> {
  try {
    const r = await runOp<{ config: ImageExecConfig | null }>(root, 'imageConfig', { name });
    return r.config ?? null;
  } catch (err) {
    // A pool (or daemon) from before image configs existed: run like a plain rootfs.
    if (isThinfsError(err, 'EINVAL') && /unknown operation/.test(err.message)) return null;
    throw err;
  }
}

/** `--entrypoint` as podman reads it: a JSON array of strings, else one command; "" clears. */
function parseEntrypoint(text: string): string[] {
  if (text === '') return [];
  if (text.trimStart().startsWith('[')) {
    try {
      const v: unknown = JSON.parse(text);
      if (Array.isArray(v) && v.every((s) => typeof s === 'string')) return v as string[];
    } catch {
      /* not JSON: a command whose name starts with '[' */
    }
  }
  return [text];
}

function requireRootlessUser(p: ProcessSpec): void {
  if (p.user.uid === 0 && p.user.gid === 0 && p.user.additionalGids.length === 0) return;
  const who = [p.user.uid, p.user.gid, ...p.user.additionalGids].join(':');
  throw fail('EINVAL', 'run', who, `a rootless run maps only your own uid and gid (to 0 in the container), so it can't run as ${p.user.uid}:${p.user.gid}; run as root, or pass -u 0`);
}

/** The container's view: mounted through `thinfs mount`, readied as a root, unmounted. */
class View {
  readonly mountpoint: string;
  private mounted = false;

  constructor(
    private readonly root: string,
    private readonly command: Command,
    private readonly name: string,
    private readonly o: { readOnly: boolean; nosuid: boolean; rootless?: { uid: number; gid: number } },
  ) {
    this.mountpoint = path.join(root, 'mnt', name);
  }

  async mount(readOnly = this.o.readOnly): Promise<void> {
    const r = this.o.rootless;
    const maps = r === undefined ? [] : ['--uid-map', `0:${r.uid}:1`, '--gid-map', `0:${r.gid}:1`];
    const lines = await self(this.root, this.command, ['mount', this.name, ...maps, ...(this.o.nosuid ? ['--nosuid'] : []), ...(readOnly ? ['--read-only'] : [])]);
    this.mounted = true;
    // Without allow_other only the caller's uid may enter the view — and a rootless
    // container's processes are exactly that uid (the only one its user namespace maps).
    for (const l of lines) if (r === undefined || !l.includes('allow_other')) process.stderr.write(`${l}\n`);
  }

  /**
   * Make sure what the runtime mounts onto exists (/proc, /dev, /sys, the /etc files, the
   * working directory), creating what is missing in the container. A read-only view is
   * mounted writable for that moment, then read-only again.
   */
  async prepare(proc: ProcessSpec): Promise<void> {
    const points = mountpointsOf(proc.cwd);
    const missing = missingMountpoints(this.mountpoint, points);
    if (missing.length === 0) return;
    log.debug({ missing: missing.map((m) => m.path) }, 'creating mountpoints in the container');
    if (!this.o.readOnly) return createMountpoints(this.mountpoint, missing);
    await this.umount();
    await this.mount(false);
    createMountpoints(this.mountpoint, missing);
    await this.umount();
    await this.mount(true);
  }

  /** Unmount; a view still busy is detached (`--force`) rather than left behind. */
  async umount(): Promise<void> {
    if (!this.mounted) return;
    const umount = (force: boolean) => runOp<UmountResult>(this.root, 'umount', { name: this.name, mountpoint: this.mountpoint, force });
    let r: UmountResult;
    try {
      r = await umount(false);
    } catch (err) {
      if (!isThinfsError(err, 'EBUSY')) throw err;
      process.stderr.write(`thinfs: warning: ${err.message}; detaching it\n`);
      r = await umount(true);
    }
    for (const w of r.warnings ?? []) process.stderr.write(`thinfs: warning: ${w}\n`);
    this.mounted = false;
  }
}

/**
 * Signals that arrive while run mounts or unmounts (outside the runtime, which forwards
 * them to the container) are remembered instead of ending the process: the view must
 * still be unmounted. A run interrupted before the container started ends with 128 + N.
 */
class Interrupts {
  caught: NodeJS.Signals | undefined;
  private readonly onSignal = (s: NodeJS.Signals) => {
    this.caught ??= s;
  };

  constructor() {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, this.onSignal);
  }

  status(): number {
    return 128 + (this.caught === undefined ? 0 : constants.signals[this.caught]);
  }

  stop(): void {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, this.onSignal);
  }
}

/**
 * Run this CLI with `argv` against the same root; resolves with the lines it printed on
 * stderr (its warnings). When it fails, its one error line becomes this command's error
 * (same errno and message).
 */
async function self(root: string, command: Command, argv: string[]): Promise<string[]> {
  const logLevel = command.optsWithGlobals<{ logLevel?: string }>().logLevel;
  const extra = logLevel === undefined ? [] : ['--log-level', logLevel];
  const { code, stderr } = await new Promise<{ code: number; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [process.argv[1]!, '--root', root, ...extra, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', (e) => reject(fail('EIO', 'run', argv[0], `cannot start \`thinfs ${argv[0]}\`: ${e.message}`)));
    child.once('close', (c) => resolve({ code: c ?? 1, stderr: err }));
  });
  const lines = stderr.split('\n').filter((l) => l !== '');
  if (code === 0) return lines;
  const last = [...lines].reverse().find((l) => l.startsWith('thinfs: ') && !l.startsWith('thinfs: warning: '));
  // A crash prints a stack instead of its one line: name the error it threw.
  const crash = lines.find((l) => /^\w*Error\b/.test(l));
  throw childError(argv, last?.slice('thinfs: '.length), crash);
}

/** The error a child command reported (`CODE: detail, syscall 'path'`), rebuilt as one. */
function childError(argv: string[], line: string | undefined, crash: string | undefined) {
  const m = line === undefined ? null : /^(E[A-Z0-9]+): (.*), (\w+)(?: '(.*)')?$/.exec(line);
  if (m !== null && m[1]! in constants.errno) return fail(m[1] as ErrnoCode, m[3]!, m[4], m[2]);
  return fail('EIO', 'run', argv.join(' '), line ?? `\`thinfs ${argv[0]}\` failed (${crash ?? 'without saying why'})`);
}

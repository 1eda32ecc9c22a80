/**
 * What runs in the container: arguments, environment, working directory and user, from
 * the image's config with the command line's overrides on top — the rules of
 * `podman run` / `docker run`:
 *  - args are Entrypoint + Cmd; a command given on the line replaces Cmd (Entrypoint
 *    stays); `--entrypoint` replaces Entrypoint and drops the image's Cmd;
 *  - an image without a config (a plain rootfs import) runs /bin/sh by default;
 *  - Env is the config's, then each `-e KEY=VAL` (`-e KEY` takes the caller's value);
 *    PATH defaults to the usual system PATH, HOSTNAME to the container's hostname,
 *    HOME to the user's passwd entry, and with a terminal (-t) TERM to xterm;
 *  - WorkingDir, else `/`; `-w` replaces it. User, else root; `-u` replaces it.
 */
import { fail } from '../errors.js';
import { SYSTEM_PATH } from './programs.js';
import { resolveUser, type ExecUser } from './user.js';

/** The part of an image's OCI config (`config` object) that says how to run it. */
export interface ImageExecConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

/** What the command line says about the process. */
export interface ProcessOverrides {
  /** Command and arguments after `--` (empty: the image's). */
  cmd: string[];
  /** `--entrypoint`, when given ([] clears the image's). */
  entrypoint?: string[];
  /** `-e` values in order: `KEY=VAL`, or `KEY` for the caller's value. */
  env: string[];
  workdir?: string;
  user?: string;
  hostname: string;
  /** A terminal is allocated (`-t`): TERM defaults to xterm, as in podman. */
  tty?: boolean;
}

/** The process as a runtime starts it. */
export interface ProcessSpec {
  args: string[];
  /** `KEY=VAL`, in order, keys unique. */
  env: string[];
  /** Absolute path in the container. */
  cwd: string;
  user: ExecUser;
}

/** Syntax check of a `-e` value: a non-empty key without NUL, then `=VAL` or nothing. */
export function validEnvArg(arg: string): boolean {
  const key = arg.split('=', 1)[0]!;
  return key !== '' && !arg.includes('\0');
}

/** The process for image config `config` (null: none) under the command line's overrides, the user resolved in `rootfs`. */
export function processSpec(rootfs: string, config: ImageExecConfig | null, o: ProcessOverrides, callerEnv: NodeJS.ProcessEnv = process.env): ProcessSpec {
  const entrypoint = o.entrypoint ?? config?.Entrypoint ?? [];
  const cmd = o.cmd.length > 0 ? o.cmd : o.entrypoint !== undefined ? [] : config?.Cmd ?? [];
  let args = [...entrypoint, ...cmd];
  if (args.length === 0) {
    if (config !== null) throw fail('EINVAL', 'run', undefined, 'the image has no Entrypoint or Cmd: give a command after --');
    args = ['/bin/sh'];
  }

  const cwd = o.workdir ?? (config?.WorkingDir || '/');
  if (!cwd.startsWith('/')) throw fail('EINVAL', 'run', cwd, `the working directory must be an absolute path, not '${cwd}'`);

  const user = resolveUser(rootfs, o.user ?? config?.User ?? '');

  const env = new Map<string, string>();
  const set = (kv: string) => {
    const eq = kv.indexOf('=');
    if (eq > 0) env.set(kv.slice(0, eq), kv);
  };
  for (const kv of config?.Env ?? []) set(kv);
  for (const arg of o.env) {
    if (arg.includes('=')) set(arg);
    else if (callerEnv[arg] !== undefined) set(`${arg}=${callerEnv[arg]}`);
  }
  if (!env.has('PATH')) env.set('PATH', `PATH=${SYSTEM_PATH}`);
  if (!env.has('HOSTNAME')) env.set('HOSTNAME', `HOSTNAME=${o.hostname}`);
  if (!env.has('HOME')) env.set('HOME', `HOME=${user.home}`);
  if (o.tty === true && !env.has('TERM')) env.set('TERM', 'TERM=xterm');

  return { args, env: [...env.values()], cwd, user };
}

/**
 * The global options every command shares (--root, --log-level) and where the pool
 * root is when --root is not given.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';

/** The options every command can read. */
export interface Globals {
  /** Absolute path of the pool root. */
  root: string;
}

/**
 * The pool root: --root, else $THINFS_ROOT, else /var/lib/thinfs for root, else
 * $XDG_DATA_HOME/thinfs (when absolute, as the XDG spec asks) or ~/.local/share/thinfs.
 */
export function resolveRoot(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  uid: number = process.getuid?.() ?? -1,
  home: string = os.homedir(),
): string {
  if (flag !== undefined && flag !== '') return path.resolve(flag);
  if (env.THINFS_ROOT !== undefined && env.THINFS_ROOT !== '') return path.resolve(env.THINFS_ROOT);
  if (uid === 0) return '/var/lib/thinfs';
  const xdg = env.XDG_DATA_HOME;
  if (xdg !== undefined && path.isAbsolute(xdg)) return path.join(xdg, 'thinfs');
  return path.join(home, '.local', 'share', 'thinfs');
}

/** Commander parser of --root: an empty value is refused, not taken for "the default root". */
export function parseRoot(value: string): string {
  if (value.trim() === '') throw new InvalidArgumentError('the pool root must not be empty (leave out --root for the default)');
  return value;
}

/** The global options as seen from a (sub)command. */
export function globals(cmd: Command): Globals {
  const opts = cmd.optsWithGlobals<{ root?: string }>();
  return { root: resolveRoot(opts.root) };
}

/**
 * The `thinfs` command line: global options, one module per command under commands/.
 * Every command parses its options into an options object, runs one operation
 * (daemon/client.ts: through the pool's daemon when one runs) and formats the result.
 * Commander's own errors are thrown (exitOverride), not printed, so that cli/errors.ts
 * turns every failure into one line on stderr.
 */
import { Command, Option } from 'commander';
import { configureLog, isLogLevel, LOG_LEVELS } from '../log.js';
import { UsageError } from './errors.js';
import { parseRoot } from './globals.js';
import { packageVersion } from './version.js';
import * as check from './commands/check.js';
import * as info from './commands/info.js';
import * as init from './commands/init.js';
import * as resize from './commands/resize.js';
import * as trim from './commands/trim.js';
import * as mount from './commands/mount.js';
import * as umount from './commands/umount.js';
import * as mounts from './commands/mounts.js';
import * as daemon from './commands/daemon.js';
import * as importCmd from './commands/import.js';
import * as create from './commands/create.js';
import * as commit from './commands/commit.js';
import * as ls from './commands/ls.js';
import * as inspect from './commands/inspect.js';
import * as rm from './commands/rm.js';
import * as exportCmd from './commands/export.js';
import * as runCmd from './commands/run.js';
import * as load from './commands/load.js';
import * as save from './commands/save.js';
import * as diff from './commands/diff.js';
import * as stats from './commands/stats.js';
import * as snapshotter from './commands/snapshotter.js';

/** Commands in the order help lists them; later ones (import, create, mount, ...) register here too. */
const COMMANDS: { register(program: Command): void }[] = [init, info, resize, check, trim, importCmd, exportCmd, load, save, create, commit, ls, inspect, diff, rm, mount, umount, mounts, stats, runCmd, snapshotter, daemon];

/** Build the program; `parseAsync` rejects with a CommanderError, UsageError or ThinfsError. */
export function buildProgram(): Command {
  const program = new Command('thinfs')
    .description('thin-provisioned snapshot storage for containers: a devicemapper-style thin pool on a sparse file, mounted through FUSE')
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('--root <dir>', 'pool root directory (default: $THINFS_ROOT, else /var/lib/thinfs as root, else $XDG_DATA_HOME/thinfs or ~/.local/share/thinfs)', parseRoot)
    .addOption(new Option('--log-level <level>', 'log level (default: $THINFS_LOG_LEVEL or error)').choices(LOG_LEVELS))
    .exitOverride()
    .configureOutput({ outputError: () => {} })
    .showSuggestionAfterError(true);
  // A command answers with its output or its one error line; the pool's warnings (ENOSPC,
  // needs_check) repeat what that answer says, so they show from --log-level warn on. At
  // the default level even error records wait for the outcome (log.ts): a failure prints
  // only its one line, a success shows them; a level asked for shows them as they come.
  program.hook('preAction', (_program, action) => {
    acting.set(program, action);
    const { logLevel } = program.opts<{ logLevel?: string }>();
    const level = logLevel ?? envLogLevel();
    configureLog({ level: level ?? 'error', pretty: process.stderr.isTTY === true, hold: level === undefined });
  });
  for (const c of COMMANDS) c.register(program);
  return program;
}

const acting = new WeakMap<Command, Command>();

/**
 * Whether the failed command line asked for `--json` (so its error is told as JSON): the
 * command that ran says; a line that failed before any command ran (an unknown option, a
 * missing argument) asked for it when `--json` is among its words before `--`.
 */
export function jsonRequested(program: Command, argv: readonly string[]): boolean {
  const action = acting.get(program);
  if (action !== undefined) return action.opts<{ json?: boolean }>().json === true;
  const words = argv.slice(2);
  const end = words.indexOf('--');
  return (end < 0 ? words : words.slice(0, end)).includes('--json');
}

/** $THINFS_LOG_LEVEL (unset or empty: undefined); a value that names no level is a usage error. */
function envLogLevel(): string | undefined {
  const env = process.env.THINFS_LOG_LEVEL;
  if (env === undefined || env === '') return undefined;
  if (!isLogLevel(env)) throw new UsageError(`THINFS_LOG_LEVEL '${env}' is not a log level (one of ${LOG_LEVELS.join(', ')})`);
  return env;
}

/**
 * The one pino root logger. Each layer takes `log.child({ component })`.
 * JSON lines by default; `configureLog` redirects to a file (the daemon) or formats them
 * with pino-pretty for a terminal (--foreground, the CLI).
 *
 * No log call throws and none takes the process down: every line goes through a
 * LogSink (log-sink.ts), which keeps lines it cannot write (a full host filesystem, a
 * closed pipe) and writes them with a notice once it can. Formatting for a terminal is
 * done in this thread (pino-pretty's formatter), not in a transport worker, so a
 * process that exits right after logging loses nothing.
 *
 * The CLI at its default level holds its lines back (`hold`, then `releaseLog`): a
 * failing command answers with exactly one line, `thinfs: ...` (cli/errors.ts), and the
 * error records logged on the way there (the pool's "needs check", "commit failed")
 * repeat that answer. They show when the command succeeds after all, and live with an
 * explicit --log-level or $THINFS_LOG_LEVEL.
 */
import pino, { type Logger } from 'pino';
import { prettyFactory } from 'pino-pretty';
import { fail } from './errors.js';
import { LogSink, type SinkStats } from './log-sink.js';

/** pino's levels, most severe first; `silent` logs nothing. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** True when `s` names a log level. */
export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

// Until configureLog runs: $THINFS_LOG_LEVEL if it names a level (the CLI reports one
// that does not, in one line), else warn. pino itself throws on an unknown level.
const envLevel = process.env.THINFS_LOG_LEVEL;
let sink = new LogSink({ fd: 2 });
let root: Logger = pino({ level: envLevel !== undefined && isLogLevel(envLevel) ? envLevel : 'warn' }, sink);

/** The logger for one component (pool, fs, fuse, daemon, cli, layers). */
export function logger(component: string): Logger {
  return new Proxy({} as Logger, {
    // Resolve the root at call time so configureLog after import still applies.
    get(_t, prop) {
      const child = childFor(component);
      const value = Reflect.get(child, prop, child);
      return typeof value === 'function' ? value.bind(child) : value;
    },
  });
}

const children = new Map<string, Logger>();
function childFor(component: string): Logger {
  let c = children.get(component);
  if (c === undefined) {
    c = root.child({ component });
    children.set(component, c);
  }
  return c;
}

export interface LogConfig {
  level?: string;
  /** A file to append JSON lines to; default stderr. */
  file?: string;
  /** Human-readable lines (pino-pretty), for a terminal. */
  pretty?: boolean;
  /** Keep lines back until `releaseLog` (the CLI at its default level). */
  hold?: boolean;
}

/**
 * Replace the root logger; children made afterwards (and through `logger()`) follow.
 * Throws EINVAL for a level pino does not know (nothing changes then). Lines the
 * previous root held back are written.
 */
export function configureLog(cfg: LogConfig): void {
  const level = cfg.level ?? root.level;
  if (!isLogLevel(level)) throw fail('EINVAL', 'log', undefined, `'${level}' is not a log level (one of ${LOG_LEVELS.join(', ')})`);
  const format = cfg.pretty ? prettyFactory({ colorize: cfg.file === undefined }) : undefined;
  const next = new LogSink(cfg.file !== undefined ? { file: cfg.file } : { fd: 2 }, { format, hold: cfg.hold });
  const prev = sink;
  sink = next;
  root = pino({ level }, next);
  children.clear();
  // Not closed: a child taken from the old root before now may still write through it.
  prev.release(true);
}

/**
 * End holding (configureLog `hold`): a command that failed drops what it held (its one
 * error line said it), one that succeeded writes it. No-op when nothing is held.
 */
export function releaseLog(failed: boolean): void {
  sink.release(!failed);
}

/** What the current destination could not write so far (dropped and waiting lines). */
export function logStats(): SinkStats {
  return sink.stats();
}

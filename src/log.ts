/**
 * The one pino root logger. Each layer takes `log.child({ component })`.
 * JSON lines by default; `configureLog` redirects to a file (the daemon) or to
 * pino-pretty on a terminal (--foreground, the CLI).
 */
import pino, { type Logger, type DestinationStream } from 'pino';

let root: Logger = pino({ level: process.env.THINFS_LOG_LEVEL ?? 'warn' }, pino.destination(2));

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
}

/** Replace the root logger; children made afterwards (and through `logger()`) follow. */
export function configureLog(cfg: LogConfig): void {
  const level = cfg.level ?? root.level;
  let dest: DestinationStream;
  if (cfg.pretty) {
    dest = pino.transport({ target: 'pino-pretty', options: { destination: cfg.file ?? 2, colorize: cfg.file === undefined } });
  } else if (cfg.file !== undefined) {
    dest = pino.destination({ dest: cfg.file, append: true, mkdir: true, sync: true });
  } else {
    dest = pino.destination(2);
  }
  root = pino({ level }, dest);
  children.clear();
}

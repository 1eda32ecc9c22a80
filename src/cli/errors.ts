/**
 * How a command ends when something goes wrong: exactly one line on stderr,
 * `thinfs: <message>`, and an exit status — 2 for usage (the command line itself is
 * wrong), 1 for everything else. A ThinfsError prints its message; an error nobody
 * expected prints one line too, its stack goes to the log at debug level.
 *
 * With `--json` the one line on stderr is a JSON object instead, with the same exit
 * status: `{"error":{"code":"ENOENT","errno":2,"message":"ENOENT: no image ..."}}` —
 * the errno's name and number (EINVAL for a wrong command line) and the message the text
 * line would show. It goes to stderr, as the text line does, so stdout holds only
 * results: a script reading stdout never takes an error for one, and `2>&1` or the exit
 * status tell it something failed.
 */
import { constants } from 'node:os';
import { CommanderError } from 'commander';
import { isThinfsError, type ErrnoCode } from '../errors.js';
import { logger } from '../log.js';

const log = logger('cli');

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** The command line is wrong (an option combination, a value): exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** How a failure is told: `thinfs: ...` (text) or one JSON object (`--json`). */
export interface ReportOptions {
  json?: boolean;
}

/** The error as `--json` prints it. */
export interface JsonError {
  error: { code: ErrnoCode; errno: number; message: string };
}

/** Print `err` as one line on stderr (text, or JSON with `json`); return the exit status. */
export function reportError(err: unknown, opts: ReportOptions = {}): number {
  const print = (code: ErrnoCode, message: string) => printLine(code, message, opts.json === true);
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT_OK;
    // Help was already printed: `thinfs help CMD` (status 0), or no command given (usage).
    if (err.code === 'commander.help') return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    print('EINVAL', err.message.replace(/^error: /, ''));
    return EXIT_USAGE;
  }
  if (err instanceof UsageError) {
    print('EINVAL', err.message);
    return EXIT_USAGE;
  }
  if (isThinfsError(err)) {
    print(err.code, err.message);
    log.debug({ err }, 'command failed');
    return EXIT_FAILURE;
  }
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  print(typeof code === 'string' && code in constants.errno ? (code as ErrnoCode) : 'EIO', message);
  log.debug({ err }, 'unexpected error');
  return EXIT_FAILURE;
}

function printLine(code: ErrnoCode, message: string, json: boolean): void {
  const line = message.replace(/\s*\n\s*/g, ' ').trim();
  if (!json) {
    process.stderr.write(`thinfs: ${line}\n`);
    return;
  }
  const e: JsonError = { error: { code, errno: constants.errno[code], message: line } };
  process.stderr.write(`${JSON.stringify(e)}\n`);
}

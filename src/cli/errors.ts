/**
 * How a command ends when something goes wrong: exactly one line on stderr,
 * `thinfs: <message>`, and an exit status — 2 for usage (the command line itself is
 * wrong), 1 for everything else. A ThinfsError prints its message; an error nobody
 * expected prints one line too, its stack goes to the log at debug level.
 */
import { CommanderError } from 'commander';
import { isThinfsError } from '../errors.js';
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

/** Print `err` as one line on stderr; return the exit status. */
export function reportError(err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT_OK;
    // Help was already printed: `thinfs help CMD` (status 0), or no command given (usage).
    if (err.code === 'commander.help') return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    printLine(err.message.replace(/^error: /, ''));
    return EXIT_USAGE;
  }
  if (err instanceof UsageError) {
    printLine(err.message);
    return EXIT_USAGE;
  }
  if (isThinfsError(err)) {
    printLine(err.message);
    log.debug({ err }, 'command failed');
    return EXIT_FAILURE;
  }
  const message = err instanceof Error ? err.message : String(err);
  printLine(message);
  log.debug({ err }, 'unexpected error');
  return EXIT_FAILURE;
}

function printLine(message: string): void {
  const line = message.replace(/\s*\n\s*/g, ' ').trim();
  process.stderr.write(`thinfs: ${line}\n`);
}

/** Commander argument parsers for sizes and percentages, and the shared --json option. */
import { InvalidArgumentError, type Command } from 'commander';
import { parsePercent, parseSize, SIZE_HINT } from './sizes.js';

/** Commander parser for a size option (exit status 2 when it does not parse). */
export function sizeArg(text: string): number {
  try {
    return parseSize(text);
  } catch {
    throw new InvalidArgumentError(SIZE_HINT);
  }
}

/** Commander parser for a percentage option. */
export function percentArg(text: string): number {
  try {
    return parsePercent(text);
  } catch {
    throw new InvalidArgumentError('expected a percentage such as 10% or 10');
  }
}

/** Add `--json` to a command. */
export function withJson(cmd: Command): Command {
  return cmd.option('--json', 'print the result as JSON');
}

#!/usr/bin/env node
/** Entry point of the `thinfs` command. */
import { reportError } from './errors.js';
import { buildProgram } from './program.js';

// `thinfs info | head -1`: a reader that goes away is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(process.exitCode ?? 0);
});

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  process.exitCode = reportError(err);
}

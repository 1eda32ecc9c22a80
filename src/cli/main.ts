#!/usr/bin/env node
/** Entry point of the `thinfs` command. */
import { releaseLog } from '../log.js';
import { reportError } from './errors.js';
import { buildProgram, jsonRequested } from './program.js';

const program = buildProgram();
const json = () => jsonRequested(program, process.argv);

// `thinfs info | head -1`: a reader that goes away is not an error. Output that cannot be
// written (`thinfs info > /full/disk/file`) is a failure, told in one line like any other.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') process.exitCode = reportError(Object.assign(new Error(`cannot write the output: ${err.message}`), { code: err.code }), { json: json() });
  process.exit(process.exitCode ?? 0);
});

// Log records held back at the default level (log.ts) show only when the command ends
// with status 0: otherwise it has said what went wrong itself, in its one error line (or
// check's report). The exit event also covers commands that call process.exit.
process.on('exit', (code) => releaseLog(code !== 0));

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // With --json the error is one JSON object on stderr (cli/errors.ts).
  process.exitCode = reportError(err, { json: json() });
}

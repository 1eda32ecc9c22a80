'use strict';
// npm postinstall: the native side of thinfs, reproducible from a fresh clone.
//
// 1. Applies native-deps/fuse-native.patch to node_modules/fuse-native (2.2.6),
//    once: a file that already carries the patch is left alone. The patch gives
//    JS handlers the calling process's uid/gid/pid/umask (fuse-native never
//    passes fuse_get_context()), the raw utimens times (fuse-native drops mtime
//    and nanoseconds), a pass-through for extra libfuse2 options, and links the
//    system libfuse.so.2 (Debian's libfuse2) instead of the bundled copy, and
//    adds a libfuse3 low-level mode (Fuse.LowLevel). The reasons are written at
//    the top of the patch file.
// 2. Copies the low-level mode's sources, whole files kept in
//    native-deps/fuse-native/ (fuse-lowlevel*.{c,h}, lowlevel.js), into fuse-native.
// 3. Rebuilds fuse-native from source with node-gyp: build/Release/fuse.node
//    (libfuse2) and build/Release/fuse_lowlevel.node (libfuse3).
//    node-gyp-build prefers build/Release/fuse.node over prebuilds/, so the
//    unpatched prebuild is never picked while the rebuilt binary exists; step 5
//    checks that.
// 4. Builds the small N-API addon in native-deps/native/ (fallocate punch hole)
//    into native-deps/build/thinfs_native.node.
// 5. Loads the three binaries and checks they are the patched ones, that
//    fuse-native resolved libfuse.so.2 and the low-level mode libfuse3.so.3
//    from the system, and that the low-level mode has all its replies.
//
// Builds are skipped when a stamp (hash of patch/sources + Node version)
// matches, so repeated `npm install` stays quick. Output: one line, or the
// tail of the failing build.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..');
const PATCH_FILE = path.join(__dirname, 'fuse-native.patch');
/** Whole files added to fuse-native (the low-level mode), copied next to its index.js. */
const ADDED_DIR = path.join(__dirname, 'fuse-native');
const ADDON_SRC = path.join(__dirname, 'native');
const BUILD_DIR = path.join(__dirname, 'build');
const ADDON_STAGE = path.join(BUILD_DIR, 'addon');
const ADDON_OUT = path.join(BUILD_DIR, 'thinfs_native.node');
const FUSE_NATIVE_VERSION = '2.2.6';
/**
 * The low-level mode's binary, inside fuse-native. node-gyp-build loads the first .node
 * of build/Release in name order, fuse.node ('.' sorts before '_'); verify() checks it.
 */
const LOWLEVEL_NODE = 'build/Release/fuse_lowlevel.node';
/** What the low-level binding must export (fuse-lowlevel.c, fuse-lowlevel-replies.c). */
const LOWLEVEL_EXPORTS = [
  'mount', 'unmount', 'notify', 'stats', 'nocap', 'reply_err', 'reply_entry', 'reply_create', 'reply_attr',
  'reply_readlink', 'reply_open', 'reply_write', 'reply_buf', 'reply_iov', 'reply_data',
  'reply_statfs', 'reply_xattr', 'reply_lseek', 'reply_readdir',
];

class BuildError extends Error {}

// ---- unified diff, applied strictly (exact context, any offset) ----

/** Parses a unified diff into [{ file, hunks: [{ oldStart, oldLines, newLines }] }]. */
function parsePatch(text) {
  const lines = text.split('\n');
  const files = [];
  let i = 0;
  while (i < lines.length) {
    if (!lines[i].startsWith('--- ') || !(lines[i + 1] || '').startsWith('+++ ')) {
      i++;
      continue;
    }
    const file = lines[i + 1].slice(4).split('\t')[0].replace(/^b\//, '');
    const entry = { file, hunks: [] };
    files.push(entry);
    i += 2;
    while (i < lines.length && lines[i].startsWith('@@ ')) {
      const m = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/.exec(lines[i]);
      if (!m) throw new BuildError(`bad hunk header in ${PATCH_FILE}: ${lines[i]}`);
      let oldCount = m[2] === undefined ? 1 : Number(m[2]);
      let newCount = m[4] === undefined ? 1 : Number(m[4]);
      const hunk = { oldStart: Number(m[1]), oldLines: [], newLines: [] };
      i++;
      while (oldCount > 0 || newCount > 0) {
        const l = lines[i++];
        if (l === undefined) throw new BuildError(`truncated hunk in ${PATCH_FILE} (${file})`);
        if (l.startsWith('\\')) continue;
        const tag = l[0] || ' ';
        const body = l.slice(1);
        if (tag === ' ') {
          hunk.oldLines.push(body);
          hunk.newLines.push(body);
          oldCount--;
          newCount--;
        } else if (tag === '-') {
          hunk.oldLines.push(body);
          oldCount--;
        } else if (tag === '+') {
          hunk.newLines.push(body);
          newCount--;
        } else {
          throw new BuildError(`bad hunk line in ${PATCH_FILE} (${file}): ${l}`);
        }
      }
      entry.hunks.push(hunk);
    }
  }
  return files;
}

function indexOfLines(haystack, needle, from) {
  outer: for (let i = from; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Applies hunks (reversed: new -> old); returns the new text, or undefined if any hunk does not match. */
function applyHunks(text, hunks, reverse) {
  const lines = text.split('\n');
  let from = 0;
  for (const h of hunks) {
    const find = reverse ? h.newLines : h.oldLines;
    const put = reverse ? h.oldLines : h.newLines;
    const at = indexOfLines(lines, find, from);
    if (at < 0) return undefined;
    lines.splice(at, find.length, ...put);
    from = at + put.length;
  }
  return lines.join('\n');
}

/**
 * Patches fuse-native in place; returns true if any file changed. The pristine
 * file is kept beside it (<file>.thinfs-orig), so a newer patch re-applies cleanly
 * over an older one.
 */
function applyFuseNativePatch(fuseDir) {
  const files = parsePatch(fs.readFileSync(PATCH_FILE, 'utf8'));
  if (files.length === 0) throw new BuildError(`${PATCH_FILE} holds no diff`);
  const pending = [];
  for (const { file, hunks } of files) {
    const target = path.join(fuseDir, file);
    const backup = `${target}.thinfs-orig`;
    const text = fs.readFileSync(target, 'utf8');
    if (applyHunks(text, hunks, true) !== undefined) continue; // already patched
    let patched = applyHunks(text, hunks, false);
    if (patched !== undefined) {
      fs.writeFileSync(backup, text);
    } else if (fs.existsSync(backup)) {
      patched = applyHunks(fs.readFileSync(backup, 'utf8'), hunks, false); // patched by an older patch
    }
    if (patched === undefined) {
      throw new BuildError(
        `${path.relative(ROOT, target)} is neither fuse-native ${FUSE_NATIVE_VERSION} nor patched; ` +
          'reinstall it: rm -rf node_modules/fuse-native && npm install',
      );
    }
    pending.push([target, patched]);
  }
  for (const [target, patched] of pending) fs.writeFileSync(target, patched);
  return pending.length > 0;
}

/** Copies the added files into fuse-native; returns true if any changed. */
function copyAddedFiles(fuseDir) {
  let changed = false;
  for (const f of fs.readdirSync(ADDED_DIR).sort()) {
    const src = fs.readFileSync(path.join(ADDED_DIR, f));
    const dst = path.join(fuseDir, f);
    if (fs.existsSync(dst) && fs.readFileSync(dst).equals(src)) continue;
    fs.writeFileSync(dst, src);
    changed = true;
  }
  return changed;
}

function addedFilesHash() {
  return fs.readdirSync(ADDED_DIR).sort().map((f) => f + hash(fs.readFileSync(path.join(ADDED_DIR, f)))).join(',');
}

// ---- node-gyp ----

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths: [ROOT] }));
  } catch {
    // not a project dependency; fall back to the copy bundled with npm
  }
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  candidates.push(path.join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'));
  candidates.push(path.join(prefix, 'node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'));
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) throw new BuildError('node-gyp not found (it ships with npm); reinstall npm');
  return found;
}

/** Node headers already on the machine (Debian's nodejs, or a tarball install), so node-gyp downloads nothing. */
function nodedirArgs() {
  const dirs = [process.env.npm_config_nodedir, path.resolve(path.dirname(process.execPath), '..')];
  const dir = dirs.find((d) => d && fs.existsSync(path.join(d, 'include/node/node_api.h')));
  return dir ? [`--nodedir=${dir}`] : [];
}

function nodeGypRebuild(cwd, what) {
  const r = spawnSync(process.execPath, [findNodeGyp(), 'rebuild', ...nodedirArgs()], {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, npm_config_loglevel: 'warn' },
  });
  if (r.error || r.status !== 0) {
    const out = `${r.stdout || ''}${r.stderr || ''}`.trimEnd().split('\n').slice(-40).join('\n');
    throw new BuildError(`building ${what} failed:\n${out}${r.error ? `\n${r.error}` : ''}`);
  }
}

function hash(...parts) {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

function stampMatches(stampFile, want, output) {
  try {
    return fs.existsSync(output) && fs.readFileSync(stampFile, 'utf8') === want;
  } catch {
    return false;
  }
}

// ---- steps ----

function buildFuseNative() {
  let pkgJson;
  try {
    pkgJson = require.resolve('fuse-native/package.json', { paths: [ROOT] });
  } catch {
    throw new BuildError('node_modules/fuse-native is missing; run npm install');
  }
  const fuseDir = path.dirname(pkgJson);
  const version = JSON.parse(fs.readFileSync(pkgJson, 'utf8')).version;
  if (version !== FUSE_NATIVE_VERSION) {
    throw new BuildError(`fuse-native ${version} installed; the patch is for ${FUSE_NATIVE_VERSION}`);
  }
  const patched = applyFuseNativePatch(fuseDir);
  const copied = copyAddedFiles(fuseDir);
  const output = path.join(fuseDir, 'build/Release/fuse.node');
  const stampFile = path.join(fuseDir, 'build/thinfs.stamp');
  const want = hash(fs.readFileSync(PATCH_FILE), addedFilesHash(), process.version);
  if (patched || copied || !stampMatches(stampFile, want, output) || !fs.existsSync(path.join(fuseDir, LOWLEVEL_NODE))) {
    nodeGypRebuild(fuseDir, 'fuse-native');
    fs.writeFileSync(stampFile, want);
  }
  return fuseDir;
}

function buildAddon() {
  const sources = fs.readdirSync(ADDON_SRC).sort();
  const want = hash(...sources.map((f) => f + fs.readFileSync(path.join(ADDON_SRC, f))), process.version);
  const stampFile = path.join(BUILD_DIR, 'thinfs_native.stamp');
  if (stampMatches(stampFile, want, ADDON_OUT)) return;
  fs.rmSync(ADDON_STAGE, { recursive: true, force: true });
  fs.mkdirSync(ADDON_STAGE, { recursive: true });
  for (const f of sources) fs.copyFileSync(path.join(ADDON_SRC, f), path.join(ADDON_STAGE, f));
  nodeGypRebuild(ADDON_STAGE, 'native-deps/native');
  fs.copyFileSync(path.join(ADDON_STAGE, 'build/Release/thinfs_native.node'), ADDON_OUT);
  fs.writeFileSync(stampFile, want);
}

/** Loads what was built; returns the libfuse files fuse-native runs with (libfuse2, libfuse3). */
function verify(fuseDir) {
  const nodeGypBuild = require(require.resolve('node-gyp-build', { paths: [fuseDir] }));
  const resolved = nodeGypBuild.resolve(fuseDir);
  if (path.resolve(resolved) !== path.join(fuseDir, 'build/Release/fuse.node')) {
    throw new BuildError(`fuse-native would load ${resolved}, not the rebuilt build/Release/fuse.node`);
  }
  const binding = require(resolved);
  if (typeof binding.fuse_native_get_context !== 'function') {
    throw new BuildError(`${resolved} lacks the thinfs patch; delete node_modules/fuse-native/build and rerun`);
  }
  const addon = require(ADDON_OUT);
  if (typeof addon.punchHole !== 'function') throw new BuildError(`${ADDON_OUT} does not export punchHole`);
  const lowlevel = require(path.join(fuseDir, 'lowlevel.js'));
  const missing = LOWLEVEL_EXPORTS.filter((f) => typeof lowlevel.binding[f] !== 'function');
  if (missing.length > 0 || typeof lowlevel.FuseLowLevel !== 'function' || require(fuseDir).LowLevel !== lowlevel.FuseLowLevel) {
    throw new BuildError(`${path.join(fuseDir, LOWLEVEL_NODE)} lacks the low-level mode (${missing.join(', ') || 'Fuse.LowLevel'}); delete node_modules/fuse-native/build and rerun`);
  }
  const maps = fs.readFileSync('/proc/self/maps', 'utf8').split('\n').map((l) => l.split(/\s+/)[5]);
  const lib2 = maps.find((p) => p && /\/libfuse\.so\.2/.test(p));
  if (!lib2 || lib2.includes('node_modules')) {
    throw new BuildError(`fuse-native loaded ${lib2 || 'no libfuse.so.2'}; expected the system libfuse2`);
  }
  const lib3 = maps.find((p) => p && /\/libfuse3\.so\.3/.test(p));
  if (!lib3 || lib3.includes('node_modules')) {
    throw new BuildError(`fuse-native's low-level mode loaded ${lib3 || 'no libfuse3.so.3'}; expected the system libfuse3`);
  }
  return `${lib2}, ${lib3} ${lowlevel.FuseLowLevel.FUSE_VERSION}`;
}

function main() {
  try {
    const fuseDir = buildFuseNative();
    buildAddon();
    const lib = verify(fuseDir);
    console.log(`thinfs: fuse-native ${FUSE_NATIVE_VERSION} patched with the low-level mode (${path.relative(ROOT, fuseDir)}, ${lib}); native helpers built`);
    return 0;
  } catch (err) {
    console.error(`thinfs: ${err instanceof BuildError ? err.message : err.stack}`);
    return 1;
  }
}

process.exitCode = main();

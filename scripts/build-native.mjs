#!/usr/bin/env node
/**
 * Builds moka's native addon (native/*.cc → native/build/moka-native.node): the ONNX Runtime sessions with
 * moka's custom ops, among them the NF4 generation kernel (ai.moka MatMul4bit). Without it moka still runs;
 * NF4 products then use ONNX Runtime's MatMulBnb4, which is several times slower for token-by-token generation.
 *
 *   node scripts/build-native.mjs            build (fails with a message when no C++ compiler is found)
 *   node scripts/build-native.mjs --optional build if possible; never fails (npm's install step)
 *
 * Needs a C++17 compiler (`c++`, `g++` or `clang++`, or $CXX; Debian: `apt-get install g++`) and the Node-API
 * headers of the `node-api-headers` package. Linux and macOS; elsewhere the addon is not built.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(ROOT, 'native', 'build', 'moka-native.node');
const optional = process.argv.includes('--optional');

function fail(message) {
  if (optional) {
    process.stderr.write(
      `moka: native kernels not built (${message}); NF4 generation will use ONNX Runtime's slower MatMulBnb4.\n`,
    );
    process.exit(0);
  }
  process.stderr.write(`build-native: ${message}\n`);
  process.exit(1);
}

function findCompiler() {
  for (const cxx of [process.env.CXX, 'c++', 'g++', 'clang++'].filter(Boolean)) {
    try {
      execFileSync(cxx, ['--version'], { stdio: 'ignore' });
      return cxx;
    } catch {
      // try the next one
    }
  }
  return null;
}

if (process.platform !== 'linux' && process.platform !== 'darwin')
  fail(`${process.platform} is not supported`);
const cxx = findCompiler();
if (!cxx) fail('no C++ compiler found: install one (Debian: apt-get install g++) or set $CXX');

// Every .cc and .h directly in native/ (its test/ folder is built by the tests): sources to compile, and the
// files whose change makes the addon stale.
const NATIVE = join(ROOT, 'native');
const files = readdirSync(NATIVE)
  .filter((f) => /\.(cc|h)$/.test(f))
  .map((f) => join(NATIVE, f));
const sources = files.filter((f) => f.endsWith('.cc'));
const newest = Math.max(...[...files, fileURLToPath(import.meta.url)].map((f) => statSync(f).mtimeMs));
if (existsSync(OUT) && statSync(OUT).mtimeMs >= newest && !process.argv.includes('--force')) process.exit(0);

const require = createRequire(import.meta.url);
const napiInclude = join(dirname(require.resolve('node-api-headers/package.json')), 'include');
mkdirSync(dirname(OUT), { recursive: true });
const tmp = `${OUT}.tmp-${process.pid}`;
const args = [
  '-std=c++17',
  '-O3',
  '-fPIC',
  '-shared',
  '-fvisibility=hidden',
  '-Wall',
  '-DNAPI_VERSION=8',
  '-DNODE_GYP_MODULE_NAME=moka_native',
  `-I${napiInclude}`,
  ...sources,
  '-o',
  tmp,
  '-pthread',
  ...(process.platform === 'darwin' ? ['-undefined', 'dynamic_lookup'] : ['-ldl']),
];
try {
  process.stderr.write(`moka: building native kernels (${cxx}) …\n`);
  execFileSync(cxx, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  renameSync(tmp, OUT);
} catch (err) {
  rmSync(tmp, { force: true });
  fail(`the compiler failed: ${err.message.split('\n')[0]}`);
}

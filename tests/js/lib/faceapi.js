'use strict';
/**
 * Loads @vladmandic/face-api's own Node bundle (dist/face-api.node-wasm.js) from an extracted
 * package folder, on TF.js's wasm backend, so its networks can serve as the numerical
 * reference for facerank's Keras ports.
 *
 * Why not a plain require(): the package is extracted into facerank's cache, far from this
 * folder, and its bundle require()s @tensorflow/tfjs and @tensorflow/tfjs-backend-wasm, which
 * node would look for beside the bundle. Compiling the bundle with vm.compileFunction and
 * handing it a require() rooted here resolves them from tests/js/node_modules, the exact
 * versions package-lock.json pins. The wasm backend needs no native build (tfjs-node does).
 */
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const BUNDLE = path.join('dist', 'face-api.node-wasm.js');
const harnessRequire = createRequire(path.join(__dirname, '..', 'package.json'));

/** face-api's exports, with the wasm backend active. */
async function loadFaceApi(packageDir) {
  const bundle = path.resolve(packageDir, BUNDLE);
  const source = fs.readFileSync(bundle, 'utf8');
  const module = { exports: {} };
  const wrapper = vm.compileFunction(
    source,
    ['exports', 'require', 'module', '__filename', '__dirname'],
    { filename: bundle },
  );
  wrapper(module.exports, harnessRequire, module, bundle, path.dirname(bundle));
  const faceapi = module.exports;
  if (!(await faceapi.tf.setBackend('wasm'))) {
    throw new Error('TF.js wasm backend failed to initialise');
  }
  await faceapi.tf.ready();
  return faceapi;
}

/** Little-endian float32 file -> `count` tensors of `shape` (one per image). */
function readImages(tf, file, count, shape) {
  const bytes = fs.readFileSync(file);
  const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const size = shape.reduce((a, b) => a * b, 1);
  if (values.length !== count * size) {
    throw new Error(`${file}: ${values.length} floats, expected ${count} x ${shape.join('x')}`);
  }
  return Array.from({ length: count }, (_, i) => tf.tensor3d(
    values.slice(i * size, (i + 1) * size),
    shape,
    'float32',
  ));
}

/** "HxW,HxW" -> [[H, W, 3], ...] */
function parseShapes(text) {
  return text.split(',').map((item) => {
    const match = /^(\d+)x(\d+)$/.exec(item);
    if (!match) throw new Error(`bad shape ${item}: expected HxW`);
    return [Number(match[1]), Number(match[2]), 3];
  });
}

/** One float32 file holding images of the given shapes back to back -> tensors. */
function readImagesOfShapes(tf, file, shapes) {
  const bytes = fs.readFileSync(file);
  const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const total = shapes.reduce((n, [h, w, c]) => n + h * w * c, 0);
  if (values.length !== total) {
    throw new Error(`${file}: ${values.length} floats, the shapes need ${total}`);
  }
  let offset = 0;
  return shapes.map((shape) => {
    const size = shape[0] * shape[1] * shape[2];
    offset += size;
    return tf.tensor3d(values.slice(offset - size, offset), shape, 'float32');
  });
}

/** Float32Arrays -> one little-endian float32 file, rows back to back. */
function writeRows(file, rows) {
  const total = rows.reduce((n, row) => n + row.length, 0);
  const out = new Float32Array(total);
  let offset = 0;
  for (const row of rows) {
    out.set(row, offset);
    offset += row.length;
  }
  fs.writeFileSync(file, Buffer.from(out.buffer));
}

/** `--name value` pairs -> object; every name in `required` must be present. */
function parseArgs(argv, required) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`expected --name value pairs, got ${argv.slice(i).join(' ')}`);
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  const missing = required.filter((name) => !(name in args));
  if (missing.length) throw new Error(`missing --${missing.join(', --')}`);
  return args;
}

module.exports = {
  loadFaceApi, parseArgs, parseShapes, readImages, readImagesOfShapes, writeRows,
};

'use strict';
/**
 * Runs a TF.js graph model (model.json + shards) with TF.js itself, as facerank's reference
 * for its own graph reader (facerank/descriptor/graphmodel.py).
 *
 *   node graphmodel.js --model MODEL.json --output-node NAME --input images.f32
 *                      --shape NxHxW --result out.f32
 *
 * images.f32 holds N RGB images of HxWx3 float32 values, little-endian, back to back: exactly
 * what the model's input placeholder gets (no resizing, no normalisation); out.f32 gets the
 * node's output for the batch, float32, row after row.
 *
 * The model is loaded with tf.loadGraphModel from an in-memory IOHandler built here from the
 * files (topology, weight specs and the shards' bytes), as face-api's own loader does, so no
 * file:// URL or fetch is involved. TF.js 4.22 on the wasm backend, as package-lock.json pins.
 */
const fs = require('node:fs');
const path = require('node:path');
const tf = require('@tensorflow/tfjs');
require('@tensorflow/tfjs-backend-wasm');
const { parseArgs } = require('./lib/faceapi');

/** model.json -> the ModelArtifacts tf.io.fromMemory takes (one weight buffer). */
function readArtifacts(modelFile) {
  const model = JSON.parse(fs.readFileSync(modelFile, 'utf8'));
  const folder = path.dirname(modelFile);
  const weightSpecs = [];
  const buffers = [];
  for (const group of model.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const shard of group.paths) buffers.push(fs.readFileSync(path.join(folder, shard)));
  }
  const data = Buffer.concat(buffers);
  return {
    modelTopology: model.modelTopology,
    format: model.format,
    generatedBy: model.generatedBy,
    convertedBy: model.convertedBy,
    signature: model.signature,
    userDefinedMetadata: model.userDefinedMetadata,
    weightSpecs,
    weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2), ['model', 'output-node', 'input', 'shape', 'result']);
  if (!(await tf.setBackend('wasm'))) throw new Error('TF.js wasm backend failed to initialise');
  await tf.ready();
  const model = await tf.loadGraphModel(tf.io.fromMemory(readArtifacts(args.model)));
  const [count, height, width] = args.shape.split('x').map(Number);
  const bytes = fs.readFileSync(args.input);
  const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  if (values.length !== count * height * width * 3) {
    throw new Error(`${args.input}: ${values.length} floats, expected ${args.shape}x3`);
  }
  const input = tf.tensor4d(values, [count, height, width, 3], 'float32');
  const output = model.execute(input, args['output-node']);
  const result = await output.data();
  fs.writeFileSync(args.result, Buffer.from(new Float32Array(result).buffer));
  tf.dispose([input, output]);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});

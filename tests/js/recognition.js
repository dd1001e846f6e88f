'use strict';
/**
 * Face descriptors from face-api's own faceRecognitionNet, as facerank's reference.
 *
 *   node recognition.js --package DIR --model DIR --input images.f32 --count N --output out.f32
 *
 * --package is the extracted npm package (its dist/ bundle is loaded), --model the folder of
 * its TF.js weights (the package's model/); images.f32 holds N RGB images of 150x150x3
 * float32 values in 0..255, little-endian, back to back; out.f32 gets N x 128 float32
 * descriptors, the raw network output (no normalisation).
 */
const path = require('node:path');
const { loadFaceApi, parseArgs, readImages, writeRows } = require('./lib/faceapi');

const SIZE = 150;

async function main() {
  const args = parseArgs(process.argv.slice(2), ['package', 'model', 'input', 'count', 'output']);
  const faceapi = await loadFaceApi(args.package);
  const net = faceapi.nets.faceRecognitionNet;
  await net.loadFromDisk(path.resolve(args.model));
  const images = readImages(faceapi.tf, args.input, Number(args.count), [SIZE, SIZE, 3]);
  // An array input is a batch: one descriptor per image, even for a single image.
  const descriptors = await net.computeFaceDescriptor(images);
  writeRows(args.output, descriptors);
  images.forEach((image) => image.dispose());
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});

'use strict';
/**
 * 68 face landmarks from face-api's own faceLandmark68Net, as facerank's reference.
 *
 *   node landmarks.js --package DIR --model WEIGHTS --input images.f32 --shapes HxW,HxW,...
 *                     --mode net|crops --output points.f32
 *
 * DIR is the extracted npm package (holding dist/), WEIGHTS the folder of its model/ files;
 * images.f32 holds one RGB image per entry of --shapes, float32 values in 0..255,
 * little-endian, back to back.
 *   net:   every image is a 112x112 net input; points.f32 gets the raw net output (runNet),
 *          N x 136 values, interleaved x, y as fractions of the input.
 *   crops: every image is a face crop of any size; face-api pads it to a square, resizes it
 *          and maps the points back (detectLandmarks); points.f32 gets N x 136 values,
 *          interleaved x, y as fractions of the crop's width and height.
 */
const path = require('node:path');
const {
  loadFaceApi, parseArgs, parseShapes, readImagesOfShapes, writeRows,
} = require('./lib/faceapi');

const NET_SIZE = 112;

async function main() {
  const args = parseArgs(
    process.argv.slice(2),
    ['package', 'model', 'input', 'shapes', 'mode', 'output'],
  );
  if (args.mode !== 'net' && args.mode !== 'crops') {
    throw new Error(`--mode must be net or crops, not ${args.mode}`);
  }
  const faceapi = await loadFaceApi(args.package);
  const net = faceapi.nets.faceLandmark68Net;
  await net.loadFromDisk(path.resolve(args.model));
  const images = readImagesOfShapes(faceapi.tf, args.input, parseShapes(args.shapes));
  const rows = [];
  for (const image of images) {
    if (args.mode === 'net') {
      if (image.shape[0] !== NET_SIZE || image.shape[1] !== NET_SIZE) {
        throw new Error(`net mode needs ${NET_SIZE}x${NET_SIZE} inputs, got ${image.shape}`);
      }
      // runNet treats a bare tensor as bottleneck features: hand it a NetInput.
      const output = net.runNet(await faceapi.toNetInput(image));
      rows.push(output.dataSync());
      output.dispose();
    } else {
      const landmarks = await net.detectLandmarks(image);
      rows.push(Float32Array.from(landmarks.relativePositions.flatMap((p) => [p.x, p.y])));
    }
    image.dispose();
  }
  writeRows(args.output, rows);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});

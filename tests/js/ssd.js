'use strict';
/**
 * Face detections from face-api's own ssdMobilenetv1, as facerank's reference.
 *
 *   node ssd.js --package DIR --model WEIGHTS --input images.f32 --shapes HxW,HxW,...
 *               --mode net|detect --output OUT [--min-confidence C] [--max-results N]
 *
 * DIR is the extracted npm package (holding dist/), WEIGHTS the folder of its model/ files;
 * images.f32 holds one RGB image per entry of --shapes, float32 values in 0..255,
 * little-endian, back to back. Every image goes through face-api's own input path
 * (toNetInput, toBatchTensor(512, false): zeros appended to a square, bilinear resize).
 *   net:    OUT (float32) gets, per image, the decoded boxes and scores before NMS
 *           (forwardInput): 5118 rows of ymin, xmin, ymax, xmax (fractions of the padded
 *           square) and score.
 *   detect: OUT (JSON) gets, per image, locateFaces' detections in NMS order:
 *           [score, x, y, width, height] in image pixels.
 */
const fs = require('node:fs');
const path = require('node:path');
const {
  loadFaceApi, parseArgs, parseShapes, readImagesOfShapes, writeRows,
} = require('./lib/faceapi');

async function main() {
  const args = parseArgs(
    process.argv.slice(2),
    ['package', 'model', 'input', 'shapes', 'mode', 'output'],
  );
  if (args.mode !== 'net' && args.mode !== 'detect') {
    throw new Error(`--mode must be net or detect, not ${args.mode}`);
  }
  const faceapi = await loadFaceApi(args.package);
  const net = faceapi.nets.ssdMobilenetv1;
  await net.loadFromDisk(path.resolve(args.model));
  const images = readImagesOfShapes(faceapi.tf, args.input, parseShapes(args.shapes));
  const rows = [];
  const detections = [];
  for (const image of images) {
    if (args.mode === 'net') {
      const { boxes, scores } = net.forwardInput(await faceapi.toNetInput(image));
      const boxValues = boxes[0].dataSync();
      const scoreValues = scores[0].dataSync();
      const row = new Float32Array(scoreValues.length * 5);
      scoreValues.forEach((score, i) => {
        row.set(boxValues.subarray(4 * i, 4 * i + 4), 5 * i);
        row[5 * i + 4] = score;
      });
      rows.push(row);
      boxes.forEach((t) => t.dispose());
      scores.forEach((t) => t.dispose());
    } else {
      const options = {
        minConfidence: Number(args['min-confidence'] || 0.5),
        maxResults: Number(args['max-results'] || 100),
      };
      const found = await net.locateFaces(image, options);
      detections.push(found.map((d) => [d.score, d.box.x, d.box.y, d.box.width, d.box.height]));
    }
    image.dispose();
  }
  if (args.mode === 'net') writeRows(args.output, rows);
  else fs.writeFileSync(args.output, JSON.stringify(detections));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});

// ort_run.js — run an ONNX model with ONNX Runtime (onnxruntime-node, CPU) on raw float32 input
// and write its first output as raw float32: what the ONNX export tests compare with nest's own
// forward pass (tests/test_onnx.c, docs/onnx.md).
// Usage: NODE_PATH=DIR/node_modules node ort_run.js MODEL IN.f32 OUT.f32 BATCH D1 [D2 D3]
//   IN.f32 holds rows of D1*D2*D3 little-endian floats (any number of rows); they are fed to the
//   model's input `input` BATCH rows at a time (the last run may be shorter: the batch dimension
//   is symbolic), with shape [rows, D1, ...]. OUT.f32 gets the `logits` of every row, in order.
//   Prints one line: "rows=R out=K" (K = values per row).
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, inPath, outPath, batchArg, ...dimArgs] = process.argv.slice(2);
  if (!model || !inPath || !outPath || !batchArg || dimArgs.length === 0)
    throw new Error('usage: ort_run.js MODEL IN.f32 OUT.f32 BATCH D1 [D2 D3]');
  const batch = parseInt(batchArg, 10), dims = dimArgs.map((d) => parseInt(d, 10));
  const per = dims.reduce((a, b) => a * b, 1);
  const buf = fs.readFileSync(inPath);
  if (buf.length % (4 * per) !== 0) throw new Error(`${inPath}: not a whole number of rows`);
  const x = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const rows = x.length / per;
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all',
  });
  if (!session.inputNames.includes('input') || !session.outputNames.includes('logits'))
    throw new Error(`${model}: expected input 'input' and output 'logits', got ` +
                    `${session.inputNames} -> ${session.outputNames}`);
  const chunks = [];
  let k = 0;
  for (let r0 = 0; r0 < rows; r0 += batch) {
    const r = Math.min(batch, rows - r0);
    const t = new ort.Tensor('float32', x.subarray(r0 * per, (r0 + r) * per), [r, ...dims]);
    const out = (await session.run({ input: t })).logits;
    if (out.dims.length !== 2 || out.dims[0] !== r)
      throw new Error(`logits have shape [${out.dims}] for ${r} rows`);
    k = out.dims[1];
    chunks.push(Buffer.from(out.data.buffer, out.data.byteOffset, out.data.byteLength));
  }
  fs.writeFileSync(outPath, Buffer.concat(chunks));
  console.log(`rows=${rows} out=${k}`);
}

main().catch((e) => {
  console.error(`ort_run: ${e.message}`);
  process.exit(1);
});

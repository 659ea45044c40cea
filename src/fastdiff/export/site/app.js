// The page: load the exported models with onnxruntime-web, then regenerate on every edit, latest input wins.
import * as ort from "./ort/ort.min.mjs";
import { Tokenizer } from "./tokenizer.js";
import { euler, gaussian, toImageData, unscale } from "./sampler.js";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
// What a test (or a curious user) reads: generations run, the last and every time per image, the backend.
const stats = { ready: false, generations: 0, lastMs: null, timings: null, times: [], prompts: [], backend: null };
Object.assign(stats, { error: null, done: null }); // done: the inputs of the image shown, as JSON
window.fastdiffStats = stats;

// A plain static server sends no COOP/COEP headers, so no SharedArrayBuffer: onnxruntime-web must use one thread.
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;

async function openModels(manifest, backend) {
  const open = async ([name, m]) => {
    const externalData = m.external_data ? [{ path: m.external_data, data: `models/${m.external_data}` }] : undefined;
    return [name, await ort.InferenceSession.create(`models/${m.file}`, { executionProviders: [backend], externalData })];
  };
  return Object.fromEntries(await Promise.all(Object.entries(manifest.models).map(open)));
}

// WebGPU when the browser has an adapter, WASM otherwise (?backend=wasm forces WASM). WASM runs in onnxruntime's
// proxy worker, so that the page keeps taking keystrokes while an image is computed.
async function chooseBackend() {
  if (query.get("backend") === "wasm" || !navigator.gpu) return "wasm";
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  return adapter ? "webgpu" : "wasm";
}

async function load(manifest) {
  const backend = await chooseBackend();
  ort.env.wasm.proxy = backend === "wasm";
  try {
    return { backend, models: await openModels(manifest, backend) };
  } catch (err) {
    if (backend === "wasm") throw err;
    console.warn(`WebGPU failed (${err}); using WASM`);
    return { backend: "wasm", models: await openModels(manifest, "wasm") };
  }
}

const f32 = (data, dims) => new ort.Tensor("float32", data, dims);
// A fresh copy for each run: the WASM proxy worker takes (detaches) the buffers it is given.
const copy = (t) => new ort.Tensor(t.type, t.data.slice(), t.dims);

async function generate(page, { prompt, seed, steps }) {
  const { manifest, models, tokenizers } = page;
  const [start, shape] = [performance.now(), manifest.latent_shape];
  const tokens = (t) => new ort.Tensor("int64", BigInt64Array.from(t.encode(prompt), BigInt), [1, t.spec.max_length]);
  const ids = Object.fromEntries(tokenizers.map((t) => [t.spec.input, tokens(t)]));
  const cond = await models.text_encoder.run(ids); // outputs named as the UNet inputs they feed
  for (const [name, v] of Object.entries(manifest.unet_constants)) cond[name] = f32(Float32Array.from(v), [1, v.length]);
  const encoded = performance.now();
  const noise = page.noise ?? gaussian(seed, shape.reduce((a, b) => a * b));
  const { schedules, prediction_type: kind } = manifest.scheduler;
  const latents = await euler(schedules[steps], kind, noise, async (x, t) => {
    const inputs = { ...cond, sample: f32(x, shape), timestep: f32(Float32Array.of(t), [1]) };
    const out = await models.unet.run(Object.fromEntries(models.unet.inputNames.map((n) => [n, copy(inputs[n])])));
    return out.out_sample.data;
  });
  const denoised = performance.now();
  const { image } = await models.vae_decoder.run({ latents: f32(unscale(latents, manifest.vae, shape[1]), shape) });
  $("image").getContext("2d").putImageData(toImageData(image.data, manifest.height, manifest.width), 0, 0);
  const done = performance.now(); // the stages of FewStepGenerator's timings, in ms
  return { encode: encoded - start, denoise: denoised - encoded, decode: done - denoised, total: done - start };
}

function show(timings) {
  const median = [...stats.times].sort((a, b) => a - b)[Math.floor(stats.times.length / 2)];
  const parts = ["encode", "denoise", "decode"].map((k) => `${k} ${timings[k].toFixed(0)}`).join(" · ");
  const total = `${timings.total.toFixed(0)} ms for this image (${parts})`;
  $("time").textContent = `${total}; median ${median.toFixed(0)} ms over ${stats.times.length}`;
}

// Latest wins, no backlog: edits during a generation only change the inputs; when it ends, one more generation
// runs if they differ from what it drew.
function follow(page) {
  const inputs = () => ({ prompt: $("prompt").value, seed: Number($("seed").value) | 0, steps: $("steps").value });
  let running = false;
  return async () => {
    if (running) return;
    running = true;
    try {
      while (JSON.stringify(inputs()) !== stats.done) {
        const want = inputs();
        const timings = await generate(page, want);
        Object.assign(stats, { done: JSON.stringify(want), lastMs: timings.total, timings, generations: stats.generations + 1 });
        stats.times.push(timings.total);
        stats.prompts.push(want.prompt);
        show(timings);
      }
    } catch (err) {
      stats.error = String(err);
      $("status").textContent = `error: ${err}`;
    } finally {
      running = false;
    }
  };
}

async function main() {
  const manifest = await (await fetch("models/manifest.json")).json();
  $("title").textContent = `${manifest.preset} in your browser`;
  $("about").textContent = `${manifest.description}. Everything runs in this page: no server.`;
  Object.assign($("image"), { width: manifest.width, height: manifest.height });
  for (const s of manifest.steps) $("steps").add(new Option(`${s}`, `${s}`, false, s === manifest.default_steps));
  for (const id of ["prompt", "seed", "steps"]) if (query.has(id)) $(id).value = query.get(id); // ?prompt=…&seed=…
  const page = { manifest, tokenizers: manifest.tokenizers.map((spec) => new Tokenizer(spec)), noise: null };
  if (query.has("noise")) { // float32 little-endian unit-variance initial noise, e.g. Python's for a seed
    page.noise = new Float32Array(await (await fetch(query.get("noise"))).arrayBuffer());
    const size = manifest.latent_shape.reduce((a, b) => a * b);
    if (page.noise.length !== size) throw new Error(`${query.get("noise")} holds ${page.noise.length} floats, not ${size}`);
    $("seed").disabled = true;
  }
  Object.assign(page, await load(manifest));
  stats.backend = page.backend;
  $("backend").textContent = page.backend === "webgpu" ? "running on WebGPU" : "running on WASM (CPU, 1 thread)";
  if (page.noise) $("backend").textContent += ` · noise from ${query.get("noise")} (seed ignored)`;
  const update = follow(page);
  for (const id of ["prompt", "seed", "steps"]) $(id).addEventListener("input", update);
  stats.ready = true;
  await update();
}

main().catch((err) => { stats.error = String(err); $("status").textContent = `error: ${err}`; });

// Seeded noise, diffusers' EulerDiscreteScheduler step (s_churn = 0, so no noise is added while stepping), and
// the VAE's latent scaling and image post-processing. Float32Array arithmetic rounds as torch's float32 does.

// mulberry32: a small, fast 32-bit PRNG; uniform in [0, 1).
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// n standard normal values from `seed` (Box-Muller). Not torch's stream: the page cannot replay torch's
// Mersenne Twister, so a Python image is reproduced by loading its noise instead (?noise=FILE).
export function gaussian(seed, n) {
  const uniform = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - uniform()));
    const angle = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(angle);
    if (i + 1 < n) out[i + 1] = r * Math.sin(angle);
  }
  return out;
}

// x0 from the model output, per diffusers' prediction types.
function predictX0(kind, x, out, sigma) {
  if (kind === "epsilon") return x - sigma * out;
  if (kind === "v_prediction") return out * (-sigma / Math.sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1);
  return out; // "sample": the model predicts x0 itself
}

// Euler steps over the exported schedule; `denoise(scaledX, t)` returns the UNet's output as a Float32Array.
export async function euler(schedule, kind, noise, denoise) {
  const { timesteps, sigmas, init_noise_sigma: scale } = schedule;
  let x = noise.map((v) => v * scale);
  for (let i = 0; i < timesteps.length; i++) {
    const [sigma, next] = [sigmas[i], sigmas[i + 1]];
    const out = await denoise(x.map((v) => v / Math.sqrt(sigma * sigma + 1)), timesteps[i]);
    x = x.map((v, j) => v + ((v - predictX0(kind, v, out[j], sigma)) / sigma) * (next - sigma));
  }
  return x;
}

// Latents as the VAE decoder takes them: divided by the scaling factor (SDXL-style per-channel stats if any).
export function unscale(latents, vae, channels) {
  const plane = latents.length / channels;
  const { scaling_factor: k, latents_mean: mean, latents_std: std } = vae;
  return latents.map((v, i) => (mean ? (v * std[Math.floor(i / plane)]) / k + mean[Math.floor(i / plane)] : v / k));
}

// (1, 3, H, W) in [-1, 1] → RGBA bytes, as diffusers' postprocess: clamp(x / 2 + 0.5, 0, 1) * 255, rounded.
export function toImageData(image, height, width) {
  const plane = height * width;
  const rgba = new Uint8ClampedArray(plane * 4).fill(255);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) rgba[4 * p + c] = Math.round(Math.min(1, Math.max(0, image[c * plane + p] / 2 + 0.5)) * 255);
  }
  return new ImageData(rgba, width, height);
}

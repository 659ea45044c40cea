"""Issue 30 probe: the recipe's teacher stage (train_teacher, 5400 steps, seed 0) on the latents of a VAE from
vae.py, then teacher@20 (PNDM as shipped, CFG 1/2/4) on the 96 held-out prompts at three noise seeds through that
VAE's own decoder. Usage: python teacher.py VAE_FOLDER STEPS OUT"""
import json, sys, time, torch, diffusers
from pathlib import Path
from fastdiff.distill.ablation import real_images, _scores
from fastdiff.distill.classifier import images_to_tensor, shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs, generate
from fastdiff.distill.recipe import build_pipeline, train_teacher, _encode
from fastdiff.distill.shapes import make_shapes, caption
torch.set_num_threads(1)
vae_dir, steps, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
pipe = build_pipeline(0)
vae = diffusers.AutoencoderKL.from_pretrained(vae_dir).eval()
pipe = diffusers.StableDiffusionPipeline(**(pipe.components | {"vae": vae}), requires_safety_checker=False)
data = make_shapes(4096, seed=0)
latents = _encode(vae, images_to_tensor(data.images))
s = time.perf_counter()
train_teacher(pipe, latents, data.captions, steps, seed=0, log=out / "losses.csv")
res = {"minutes": (time.perf_counter() - s) / 60}
pipe.save_pretrained(out / "teacher")
pipe.set_progress_bar_config(disable=True)
torch.set_num_threads(2)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
prompts = [caption(x) for x in specs]
for g in (1.0, 2.0, 4.0):
    rows = [_scores(generate(pipe, prompts, steps=20, guidance=g, seed=HELD_OUT_SEED + k), specs, classifier=clf, real=real) for k in range(3)]
    res[f"cfg{g}"] = {c: round(sum(r[c] for r in rows) / 3, 4) for c in ("all", "shape", "color", "frechet", "sharpness_off_edges")}
    print(g, res[f"cfg{g}"], flush=True)
(out / "result.json").write_text(json.dumps(res, indent=1))
print(json.dumps(res), flush=True)

"""Issue 30 probe: the teacher@20 and the ablation's students (training seeds 0 and 1) at the held-out noise seed and
+1, +2, their latents decoded by each decoder given (the shipped one and retrained ones); the held-out real images'
round trip too. Usage: python evaldec.py NAME=VAE_FOLDER ...   (2 threads)."""
import json, sys, torch, numpy as np, diffusers
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, GUIDANCE, real_images, _scores
from fastdiff.distill.classifier import shipped_classifier, images_to_tensor
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs
from fastdiff.distill.shapes import caption
torch.set_num_threads(2)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
prompts = [caption(s) for s in specs]
teacher = _load(Path(TEACHER.repo_id))
decoders = {"shipped": teacher.vae} | {k: diffusers.AutoencoderTiny.from_pretrained(v).eval() for k, v in (a.split("=") for a in sys.argv[1:])}
models = {"teacher@20": (teacher, 20, GUIDANCE)}
for s, root in ((0, "ablation"), (1, "ablation-s1")):
    for v in ("add", "distill"):
        models[f"{v}@1 s{s}"] = (_load(Path(f"/work/exp4/{root}/{v}-3600/pipeline")), 1, 0.0)
models["adversarial@1 s0"] = (_load(Path("/work/exp4/ablation/adversarial-3600/pipeline")), 1, 0.0)
models["add@4 s0"] = (models["add@1 s0"][0], 4, 0.0)
def to_img(x):  # as the pipeline's postprocess to uint8 and back
    u8 = ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return u8.float() / 127.5 - 1.0
out = {}
with torch.no_grad():
    for dname, dec in decoders.items():
        z = teacher.vae.encode(real).latents
        r = _scores(to_img(dec.decode(z).sample), specs, classifier=clf, real=real)
        print(dname, "roundtrip", {k: round(r[k], 4) for k in ("all", "shape", "frechet")}, flush=True)
        out[f"{dname} roundtrip"] = r
    for name, (pipe, steps, g) in models.items():
        lat = [pipe(prompts, num_inference_steps=steps, guidance_scale=g, generator=torch.Generator().manual_seed(HELD_OUT_SEED + k), output_type="latent").images for k in range(3)]
        for dname, dec in decoders.items():
            rows = [_scores(to_img(dec.decode(l).sample), specs, classifier=clf, real=real) for l in lat]
            out[f"{name} | {dname}"] = rows
            mean = {c: round(sum(x[c] for x in rows) / 3, 4) for c in ("all", "shape", "frechet", "sharpness_edges", "sharpness_off_edges")}
            print(f"{name:18s} {dname:10s}", " ".join(f"{x['all']:.3f}" for x in rows), "mean", mean, flush=True)
Path("/work/exp5/evaldec.json").write_text(json.dumps(out, indent=1))

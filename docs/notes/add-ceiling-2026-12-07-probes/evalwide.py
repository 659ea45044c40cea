"""Issue 30 probe: the teacher trained on the wide KL VAE's latents (teacher.py), through a tiny decoder trained on
those latents (KL=... dec.py): the drawn images' round trip (KL encoder, tiny decoder) and teacher@20 (PNDM, CFG 1, 2,
4) on the 96 held-out prompts at three noise seeds. Usage: python evalwide.py TEACHER_FOLDER KL_VAE TINY_VAE"""
import json, sys, torch, diffusers
from pathlib import Path
from fastdiff.distill.ablation import real_images, _scores
from fastdiff.distill.classifier import shipped_classifier
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs, generate
from fastdiff.distill.recipe import _encode
from fastdiff.distill.shapes import caption
torch.set_num_threads(2)
teacher, kl, tiny = Path(sys.argv[1]), diffusers.AutoencoderKL.from_pretrained(sys.argv[2]).eval(), diffusers.AutoencoderTiny.from_pretrained(sys.argv[3]).eval()
pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(teacher), vae=tiny)
pipe.set_progress_bar_config(disable=True)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
with torch.no_grad():
    rt = tiny.decode(_encode(kl, real)).sample.clamp(-1, 1)
res = {"roundtrip": _scores(((rt + 1) * 127.5).round() / 127.5 - 1, specs, classifier=clf, real=real)}
print("roundtrip", res["roundtrip"], flush=True)
prompts = [caption(x) for x in specs]
for g in (1.0, 2.0, 4.0):
    rows = [_scores(generate(pipe, prompts, steps=20, guidance=g, seed=HELD_OUT_SEED + k), specs, classifier=clf, real=real) for k in range(3)]
    res[f"cfg{g}"] = [{c: round(r[c], 4) for c in ("all", "shape", "color", "size", "frechet", "sharpness_off_edges")} for r in rows]
    print(g, " | ".join(f"{r['all']:.3f}/{r['shape']:.3f}/{r['frechet']:.1f}" for r in res[f"cfg{g}"]), flush=True)
Path("/work/exp5/evalwide.json").write_text(json.dumps(res, indent=1))

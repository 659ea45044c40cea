"""Issue 30 probe: each run's autoencoder ceiling on the 96 held-out drawings: the classifier on the drawings, their
tiny-autoencoder round trip, and the decode of their refined latents (`refine_latents`, as the teacher's data)."""
import sys, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, real_images
from fastdiff.distill.classifier import shipped_classifier, accuracy
from fastdiff.distill.evaluation import held_out_specs
from fastdiff.distill.recipe import refine_latents
from fastdiff.distill.conditioning import decode_latents
torch.set_num_threads(1)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
print("drawings", {k: round(v, 3) for k, v in accuracy(clf, real, specs).items()})
for folder in sys.argv[1:]:
    vae = _load(Path(folder)).vae
    with torch.no_grad():
        rt = vae.decode(vae.encode(real).latents).sample.clamp(-1, 1)
    z = refine_latents(vae, real)
    with torch.no_grad():
        rf = decode_latents(vae, z).clamp(-1, 1)
    print(folder, "roundtrip", {k: round(v, 3) for k, v in accuracy(clf, rt, specs).items()},
          "refined", {k: round(v, 3) for k, v in accuracy(clf, rf, specs).items()}, flush=True)

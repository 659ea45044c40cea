"""Issue 30 probe: the classifier's shape accuracy on the held-out real images, on their VAE round trip, and the
teacher@20's shape errors by size and shape (what an adversarial term on real data could fix)."""
import collections, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, GUIDANCE, real_images
from fastdiff.distill.classifier import shipped_classifier, accuracy
from fastdiff.distill.evaluation import HELD_OUT_SEED, held_out_specs, generate
from fastdiff.distill.shapes import caption
torch.set_num_threads(2)
specs = held_out_specs(); real = real_images(specs); clf = shipped_classifier().float()
print("real", accuracy(clf, real, specs))
pipe = _load(Path(TEACHER.repo_id))
with torch.no_grad():
    z = pipe.vae.encode(real).latents
    rt = pipe.vae.decode(z).sample.clamp(-1, 1)
print("roundtrip", accuracy(clf, rt, specs))
imgs = generate(pipe, [caption(s) for s in specs], steps=20, guidance=GUIDANCE, seed=HELD_OUT_SEED)
print("teacher", accuracy(clf, imgs, specs))
pred = clf.predict(imgs)
errs = collections.Counter(); tot = collections.Counter()
for s, p in zip(specs, pred):
    tot[(s.size, s.shape)] += 1
    if p["shape"] != s.shape: errs[(s.size, s.shape, p["shape"])] += 1
print(sorted(tot.items())); print(sorted(errs.items()))

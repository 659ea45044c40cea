"""Issue 30 probe: the showcase's path (FewStepGenerator, one call per prompt, seed i + offset) on the 96 held-out
prompts, at optimize "none" and "default", teacher@20 against student@1, three seed offsets."""
import sys, numpy as np, torch
from fastdiff import FewStepGenerator
from fastdiff.distill.classifier import accuracy, images_to_tensor, shipped_classifier
from fastdiff.distill.evaluation import held_out_specs
from fastdiff.distill.shapes import caption
torch.set_num_threads(2)
specs = held_out_specs(); clf = shipped_classifier().float()
for level in sys.argv[1].split(","):
    for preset, steps in (("fastdiff-shapes-teacher", 20), ("fastdiff-shapes", 1)):
        gen = FewStepGenerator.from_preset(preset, device="cpu", optimize=level); gen.warmup()
        res = []
        for off in (0, 1000, 2000):
            ims = [gen(caption(s), steps=steps, seed=i + off).images[0] for i, s in enumerate(specs)]
            a = accuracy(clf, images_to_tensor(np.stack([np.asarray(im) for im in ims])), specs)
            res.append(a)
            a48 = accuracy(clf, images_to_tensor(np.stack([np.asarray(im) for im in ims[:48]])), specs[:48])
            print(level, preset, off, "96:", {k: round(a[k], 3) for k in ("all", "shape", "color")}, "first48 all", round(a48["all"], 3), flush=True)
        print(level, preset, "MEAN all", round(sum(r["all"] for r in res) / 3, 4), "shape", round(sum(r["shape"] for r in res) / 3, 4), "color", round(sum(r["color"] for r in res) / 3, 4), flush=True)

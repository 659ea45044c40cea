"""The shipped-student test's reading (tests/test_distill_shipped.py): seed i for prompt i, default level, the first
32 held-out prompts, student@1 and teacher@20 through FewStepGenerator."""
import numpy as np, torch
from fastdiff import FewStepGenerator
from fastdiff.distill.classifier import accuracy, images_to_tensor, shipped_classifier
from fastdiff.distill.evaluation import held_out_specs
from fastdiff.distill.shapes import caption
specs = held_out_specs()[:32]
clf = shipped_classifier().float()
for name in ("fastdiff-shapes", "fastdiff-shapes-teacher"):
    gen = FewStepGenerator.from_preset(name, device="cpu")
    images = [np.asarray(gen(caption(s), seed=i).image) for i, s in enumerate(specs)]
    with torch.no_grad():
        sc = accuracy(clf, images_to_tensor(np.stack(images)), specs)
    print(name, {k: round(float(v), 4) for k, v in sc.items()}, flush=True)

"""The recipe's CFG search (_pick_guidance: 24 held-out prompts of eval_specs(24, seed=1), scales 1, 2, 4, 7.5) on the
refined-latent teacher."""
import torch
from pathlib import Path
from fastdiff.distill.ablation import _load
from fastdiff.distill.recipe import _pick_guidance
torch.set_num_threads(1)
print(_pick_guidance(_load(Path("/work/exp6/tinv/teacher"))))

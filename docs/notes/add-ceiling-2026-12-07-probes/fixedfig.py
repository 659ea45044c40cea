"""The recipe's figures (run's `figures["accuracy"]`: prompt_accuracy on eval_specs(), one seed for the batch, one
thread) on the candidate shipped folders."""
import json, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, STUDENT
from fastdiff.distill.evaluation import eval_specs, prompt_accuracy
torch.set_num_threads(1)
specs = eval_specs()
t, s = _load(Path(TEACHER.repo_id)), _load(Path(STUDENT.repo_id))
out = {"teacher@20": prompt_accuracy(t, specs, steps=20, guidance=2.0), "student@1": prompt_accuracy(s, specs, steps=1, guidance=0.0), "student@4": prompt_accuracy(s, specs, steps=4, guidance=0.0)}
for k, v in out.items(): print(k, {a: round(b, 4) for a, b in v.items()})

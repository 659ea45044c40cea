"""Issue 30: the recipe's figures.json computation (recipe.run's end) on the shipped folders: the 48 fixed prompts."""
import json, torch
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER, STUDENT
from fastdiff.distill.evaluation import eval_specs, prompt_accuracy
torch.set_num_threads(1)
teacher, student = _load(Path(TEACHER.repo_id)), _load(Path(STUDENT.repo_id))
specs = eval_specs()
out = {"teacher@20": prompt_accuracy(teacher, specs, steps=20, guidance=2.0),
       "student@1": prompt_accuracy(student, specs, steps=1, guidance=0.0),
       "student@4": prompt_accuracy(student, specs, steps=4, guidance=0.0)}
print(json.dumps(out, indent=1))

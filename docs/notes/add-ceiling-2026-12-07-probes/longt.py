"""Issue 30 probe: the recipe's teacher stage at STEPS steps (the recipe: 5400) on the Intel seed-0 run's refined
latents (its fp16 tiny autoencoder, refined as the recipe does; cached to refined-sSEED.pt), then its CFG pick.
`python longt.py OUT STEPS [SEED [RUN]]`: SEED the recipe's seed (data, init, noise), RUN the recipe run's folder whose
teacher/vae is that seed's tiny autoencoder (default: the Intel seed-0 run)."""
import json, sys, torch, diffusers
from pathlib import Path
from fastdiff.distill import recipe as R
from fastdiff.distill.classifier import images_to_tensor
from fastdiff.distill.shapes import make_shapes
torch.set_num_threads(1)
out, steps = Path(sys.argv[1]), int(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
run = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("/work/exp9/recipe")
out.mkdir(parents=True, exist_ok=True)
data = make_shapes(4096, seed=seed)
images = images_to_tensor(data.images)
pipe = R.build_pipeline(seed)
tiny = diffusers.AutoencoderTiny.from_pretrained(run / "teacher" / "vae").float().eval()
cache = Path(f"/work/exp10/refined-s{seed}.pt")
if cache.exists():
    refined = torch.load(cache)
else:
    refined = R.refine_latents(tiny, images)
    torch.save(refined, cache)
pipe = R.with_vae(pipe, tiny)
R.train_teacher(pipe, refined, data.captions, steps, seed=seed, log=out / "teacher_losses.csv")
R.save_fp16(pipe, out / "teacher")
g, scores = R._pick_guidance(pipe)
(out / "figures.json").write_text(json.dumps({"steps": steps, "teacher_guidance": g, "guidance_search": scores}, indent=1))
print("CFG", g, {k: round(v["all"], 3) for k, v in scores.items()}, flush=True)

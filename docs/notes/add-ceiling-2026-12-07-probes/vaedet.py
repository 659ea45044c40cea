"""Issue 30 probe: the recipe's first stage (KL VAE) for N steps, its loss CSV compared with a full run's."""
import sys, torch
from pathlib import Path
from fastdiff.distill.classifier import images_to_tensor
from fastdiff.distill.recipe import build_pipeline, train_vae
from fastdiff.distill.data import make_shapes
torch.set_num_threads(1)
n, ref = int(sys.argv[1]), Path(sys.argv[2])
data = make_shapes(4096, seed=0)
images = images_to_tensor(data.images)
pipe = build_pipeline(0)
train_vae(pipe.vae, images, n, seed=0, log=Path("/work/exp9/vaedet.csv"))
a = Path("/work/exp9/vaedet.csv").read_text().splitlines()[: n + 1]
b = ref.read_text().splitlines()[: n + 1]
print("first rows", a[1:3], b[1:3])
print("identical rows:", sum(x == y for x, y in zip(a, b)), "of", len(a))

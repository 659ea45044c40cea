"""Issue 30 probe: is the small shapes' identity in the shipped latents (8x8x4)? An MLP on the latents -> shape."""
import torch, torch.nn as nn
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER
from fastdiff.distill.classifier import images_to_tensor
from fastdiff.distill.shapes import make_shapes, SHAPES
from fastdiff.distill.recipe import _encode
torch.set_num_threads(2); torch.manual_seed(0)
vae = _load(Path(TEACHER.repo_id)).vae
def data(n, seed):
    d = make_shapes(n, seed=seed)
    x = images_to_tensor(d.images)
    with torch.no_grad(): z = _encode(vae, x)
    y = torch.tensor([SHAPES.index(s.shape) for s in d.specs]); size = [s.size for s in d.specs]
    return z.flatten(1), y, size
ztr, ytr, _ = data(4096, 0); zte, yte, size = data(512, 777)
net = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3))
opt = torch.optim.Adam(net.parameters(), 1e-3)
for i in range(4000):
    idx = torch.randint(4096, (128,)); loss = nn.functional.cross_entropy(net(ztr[idx]), ytr[idx])
    opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad(): p = net(zte).argmax(1)
print("latent probe shape acc", (p == yte).float().mean().item())
for s in ("small", "medium", "large"):
    m = torch.tensor([x == s for x in size]); print(s, (p[m] == yte[m]).float().mean().item())

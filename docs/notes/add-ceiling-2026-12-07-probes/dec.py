"""Issue 30 probe: a decoder-only AutoencoderTiny retrained on the shipped latents (the shipped tiny encoder's, of
the recipe's 4,096 training images), as the recipe trains its decoder (L1 + L2, jitter 0.1 std, batch 32, AdamW 2e-3
cosine). Usage: [KL=VAE_FOLDER] python dec.py BLOCKS STEPS OUT   (BLOCKS like 3,3,1,0); with KL, the latents
are that KL VAE's instead."""
import sys, time, json, torch, diffusers
import torch.nn.functional as F
from pathlib import Path
from fastdiff.distill.ablation import _load, TEACHER
from fastdiff.distill.classifier import images_to_tensor
from fastdiff.distill.shapes import make_shapes
from fastdiff.distill.recipe import _encode, _loop
torch.set_num_threads(1)
blocks, steps, out = tuple(int(b) for b in sys.argv[1].split(",")), int(sys.argv[2]), Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
import os
shipped = _load(Path(TEACHER.repo_id)).vae
source = diffusers.AutoencoderKL.from_pretrained(os.environ["KL"]).eval() if os.environ.get("KL") else shipped
images = images_to_tensor(make_shapes(4096, seed=0).images)
latents = _encode(source, images)  # the KL VAE of $KL when given (then the tiny encoder is left as shipped)
torch.manual_seed(0)
vae = diffusers.AutoencoderTiny(encoder_block_out_channels=(16,)*4, num_encoder_blocks=(1,1,1,1),
    decoder_block_out_channels=(16,)*4, num_decoder_blocks=blocks, scaling_factor=1.0)
vae.encoder.load_state_dict(shipped.encoder.state_dict())
g = torch.Generator().manual_seed(0)
vae.decoder.train()
def loss_fn():
    idx = torch.randint(images.shape[0], (32,), generator=g)
    x, z = images[idx], latents[idx]
    jitter = torch.where(torch.rand(32, 1, 1, 1, generator=g) < 0.5, 0.1 * latents.std(), 0.0)
    error = vae.decode(z + jitter * torch.randn(z.shape, generator=g)).sample - x
    return error.abs().mean() + error.pow(2).mean()
s = time.perf_counter()
_loop(list(vae.decoder.parameters()), steps, 2e-3, loss_fn, out / "losses.csv")
print("minutes", round((time.perf_counter() - s) / 60, 2), flush=True)
vae.eval(); vae.save_pretrained(out / "vae")

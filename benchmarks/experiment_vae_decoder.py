"""Experiment (issue 16): can the bundled VAE pass a star through if its decoder sees more shapes?

    python benchmarks/experiment_vae_decoder.py 900 2   # steps, threads
    python benchmarks/experiment_vae_decoder.py 300 2 stars   # the diagnostic: stars instead of polygons
    python benchmarks/experiment_vae_decoder.py 600 2 polygons encoder   # the encoder learns too
    python benchmarks/experiment_vae_decoder.py 900 2 polygons encoder 10   # edge pixels weigh 1 + 10
    python benchmarks/experiment_vae_decoder.py 900 2 polygons decoder 10 runs/vae-edges   # ... and save it
    python benchmarks/experiment_vae_decoder.py 600 2 world decoder 10   # world scenes only, no polygons

Fine-tunes a copy of the bundled VAE's decoder (the encoder frozen, so the UNet's latent space
stays) on batches of half world scenes, half random polygons (3-12 vertices at random angles and
radii: never the spec's star), L1 + MSE on the round trip; every 300 steps prints how often the
oracle (reserved shapes among its candidates) reads 60 stars, crosses, triangles and circles back
through the VAE, and the mean round-trip PSNR of 200 world scenes. With ``world`` there are no
polygons (world scenes only). With ``stars`` the polygons are rendered stars (other scenes than the
scored ones): not a method, a
bound on what any decoder fix can reach with this encoder's latents. With ``encoder`` the whole VAE
learns (its latent space moves, so the UNet would have to be retrained on it), lr 3e-4, plus the
recipe's 1e-6 KL term. A fifth argument K weighs every pixel within one pixel of a colour edge of
the input 1 + K times in the loss (whatever the edge's contrast), the rest 1. A sixth argument
saves the VAE there (diffusers folder) at the end; otherwise nothing is saved.
"""

import copy
import sys
import time

import numpy as np
import torch
from polygons import polygon_scene

from retouch.models.loading import load_model
from retouch.train.ldm import reconstruction_loss
from retouch.worlds import shapes64 as w

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 900
stars = len(sys.argv) > 3 and sys.argv[3] == "stars"
world_only = len(sys.argv) > 3 and sys.argv[3] == "world"
whole = len(sys.argv) > 4 and sys.argv[4] == "encoder"
edge_weight = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
save_to = sys.argv[6] if len(sys.argv) > 6 else None
vae = load_model("shapes-64", device="cpu").pipe.vae
base = copy.deepcopy(vae)
rng = np.random.default_rng(0)


def batch(rng, n=32):
    other = (lambda: w.sample_scene(rng, shapes=("star",)).render()) if stars else (lambda: polygon_scene(rng))
    out = [w.sample_scene(rng).render() if i % 2 or world_only else other() for i in range(n)]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1

def roundtrip(v, x):
    with torch.no_grad():
        return v.decode(v.encode(x).latent_dist.mode()).sample.clamp(-1, 1)

def evaluate(v, tag):
    r = np.random.default_rng(2026)
    res = {}
    for shape in ("star", "cross", "triangle", "circle"):
        hits = []
        for _ in range(60):
            s = w.sample_scene(r, shapes=(shape,), style="plain")
            x = torch.from_numpy(s.render()).permute(2, 0, 1)[None].float() / 127.5 - 1
            img = ((roundtrip(v, x)[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
            hits.append(w.read_scene(img, reserved=True).shape == shape)
        res[shape] = round(float(np.mean(hits)), 3)
    r = np.random.default_rng(7)
    ps = []
    for _ in range(200):
        x = torch.from_numpy(w.sample_scene(r).render()).permute(2, 0, 1)[None].float() / 127.5 - 1
        mse = float(((roundtrip(v, x) - x) ** 2).mean()) / 4
        ps.append(10 * np.log10(1 / mse))
    res["world_psnr"] = round(float(np.mean(ps)), 2)
    print(tag, res, flush=True)

evaluate(base, "before")
for p in vae.parameters():
    p.requires_grad_(False)
params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
if whole:
    params = list(vae.parameters())
for p in params:
    p.requires_grad_(True)
print("learning params", sum(p.numel() for p in params))
opt = torch.optim.Adam(params, lr=3e-4 if whole else 1e-4)
t = time.perf_counter()
for step in range(steps):
    x = batch(rng)
    with torch.set_grad_enabled(whole):
        posterior = vae.encode(x).latent_dist
    y = vae.decode(posterior.sample() if whole else posterior.mode()).sample
    loss = reconstruction_loss(y, x, edge_weight)
    loss = loss + (1e-6 * posterior.kl().mean() if whole else 0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 50 == 0:
        print(step, round(float(loss.detach()), 4), f"{time.perf_counter() - t:.0f}s", flush=True)
    if step and step % 300 == 0:
        evaluate(vae, f"step {step}")
evaluate(vae, f"step {steps}")
if save_to:
    vae.save_pretrained(save_to)
    print("saved to", save_to)

"""Experiment (issue 16): can the bundled VAE pass a star through if its decoder sees more shapes?

    python benchmarks/experiment_vae_decoder.py 900 2   # steps, threads
    python benchmarks/experiment_vae_decoder.py 300 2 stars   # the diagnostic: stars instead of polygons

Fine-tunes a copy of the bundled VAE's decoder (the encoder frozen, so the UNet's latent space
stays) on batches of half world scenes, half random polygons (3-12 vertices at random angles and
radii: never the spec's star), L1 + MSE on the round trip; every 300 steps prints how often the
oracle (reserved shapes among its candidates) reads 60 stars, crosses, triangles and circles back
through the VAE, and the mean round-trip PSNR of 200 world scenes. Nothing is saved. With
``stars`` the polygons are rendered stars (other scenes than the scored ones): not a method, a
bound on what any decoder fix can reach with this encoder's latents.
"""

import copy
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from retouch.models.loading import load_model
from retouch.worlds import shapes64 as w

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 900
stars = len(sys.argv) > 3 and sys.argv[3] == "stars"
vae = load_model("shapes-64", device="cpu").pipe.vae
base = copy.deepcopy(vae)
rng = np.random.default_rng(0)
PAL = np.array([w.PALETTE[c] for c in w.COLORS], dtype=np.uint8)

def polygon_scene(rng):
    bg, fg = rng.choice(len(PAL), 2, replace=False)
    side = int(rng.choice([w.SIZES["small"], w.SIZES["large"]]))
    x0, y0 = rng.integers(0, w.CANVAS - side + 1, 2)
    n = int(rng.integers(3, 13))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(0.3, 1.0, n) * side / 2
    cx, cy = (x0 + side / 2) * 4, (y0 + side / 2) * 4
    pts = [(cx + 4 * r * np.cos(a), cy + 4 * r * np.sin(a)) for a, r in zip(ang, rad, strict=True)]
    img = Image.new("RGB", (256, 256), tuple(int(v) for v in PAL[bg]))
    ImageDraw.Draw(img).polygon(pts, fill=tuple(int(v) for v in PAL[fg]))
    return np.asarray(img.resize((64, 64), Image.BOX))

def batch(rng, n=32):
    other = (lambda: w.sample_scene(rng, shapes=("star",)).render()) if stars else (lambda: polygon_scene(rng))
    out = [w.sample_scene(rng).render() if i % 2 else other() for i in range(n)]
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
for p in params:
    p.requires_grad_(True)
print("decoder params", sum(p.numel() for p in params))
opt = torch.optim.Adam(params, lr=1e-4)
t = time.perf_counter()
for step in range(steps):
    x = batch(rng)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
    y = vae.decode(z).sample
    loss = (y - x).abs().mean() + ((y - x) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 50 == 0:
        print(step, round(float(loss.detach()), 4), f"{time.perf_counter() - t:.0f}s", flush=True)
    if step and step % 300 == 0:
        evaluate(vae, f"step {step}")
evaluate(vae, f"step {steps}")

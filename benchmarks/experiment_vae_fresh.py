"""Experiment (issue 16): does a VAE trained from scratch on more shapes than the world's pass a star?

    python benchmarks/experiment_vae_fresh.py runs/vae-polygons          # 20 min on 2 cores
    python benchmarks/experiment_vae_fresh.py runs/vae-polygons --share 0.5 --threads 2

Runs the bundled recipe's own VAE stages (``recipes/shapes-64.json``: 1,000 steps on random crops,
then 600 decoder-only steps; checkpoints, and a finished stage is not run again) on world scenes
of which each is replaced, with probability ``--share``, by a random polygon (``polygons.py``:
3-12 vertices, never the spec's star). Then, for the bundled VAE and the new one alike, how often
the oracle (reserved shapes among its candidates) reads 100 plain scenes of each shape back
after the round trip (encoder mode, decoder), and the mean round-trip PSNR of 1,000 world scenes.
Nothing else is trained: the UNet would have to learn the new latent space.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from polygons import polygon_scene
from shapes_scoring import read_back

from retouch.models.loading import load_model
from retouch.train.ldm import LDMConfig, Trainer
from retouch.worlds import shapes64 as w
from retouch.worlds.shapes64_data import Shapes64Source

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "shapes-64.json"


class WithPolygons(Shapes64Source):
    """World scenes, each replaced by a random polygon with probability ``share``."""

    def __init__(self, share: float) -> None:
        super().__init__()
        self.share = share

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
        images, captions = super().sample(rng, n)
        for i in range(n):
            if rng.random() < self.share:
                images[i] = polygon_scene(rng)
        return images, captions


def figures(vae) -> dict:
    @torch.no_grad()
    def roundtrip(x: torch.Tensor) -> torch.Tensor:
        return vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)

    rng, psnr = np.random.default_rng(7), []
    for _ in range(1000):
        x = torch.from_numpy(w.sample_scene(rng).render()).permute(2, 0, 1)[None].float() / 127.5 - 1
        psnr.append(10 * np.log10(4 / float(((roundtrip(x) - x) ** 2).mean())))
    return {"read_back": read_back(roundtrip), "world_psnr": round(float(np.mean(psnr)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the run's folder (resumed if it holds one)")
    parser.add_argument("--share", type=float, default=0.5, help="fraction of polygon pictures (default 0.5)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trainer = Trainer(replace(LDMConfig.from_json(RECIPE), checkpoint_every=200), args.output)
    trainer.work.mkdir(parents=True, exist_ok=True)
    source, start = WithPolygons(args.share), time.perf_counter()
    vae = trainer.finetune_decoder(source, trainer.train_vae(source))
    print(f"VAE stages: {time.perf_counter() - start:.0f} s", flush=True)
    report = {"bundled": figures(load_model("shapes-64", device="cpu").pipe.vae), "new": figures(vae)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

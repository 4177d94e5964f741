"""Load trained concepts with plain diffusers (no retouch import) and draw one picture each.

Run as ``python concept_plain_load.py JOBS.json OUT.npz``; JOBS is a list of {"name", "base",
"concept", "prompt", "lora_role", "steps", "guidance_scale"}. Each picture: DDIM, seed 0, 2 steps and
guidance 7.5 unless the job says otherwise, as ``retouch.generate(..., scheduler="ddim")`` draws it.
This is also how a diffusers user loads them.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file


def load(base: str, folder: Path, lora_role: str) -> StableDiffusionPipeline:
    files = json.loads((folder / "concept.json").read_text())["files"]
    source = folder / files["model"] if "model" in files else base
    pipe = StableDiffusionPipeline.from_pretrained(source, safety_checker=None, requires_safety_checker=False)
    if "embeddings" in files:
        embeds = load_file(folder / files["embeddings"])
        if len(embeds) == 1:
            pipe.load_textual_inversion(str(folder / files["embeddings"]))
        else:  # several tokens in one file: pass them as tensors with their tokens
            pipe.load_textual_inversion(list(embeds.values()), token=list(embeds))
    if "lora" in files:
        pipe.load_lora_weights(folder, weight_name=files[lora_role])
    if "custom_diffusion" in files:
        # safetensors drops the empty entries of the layers that learn nothing, which
        # load_attn_procs needs to set a processor on every layer: give them back
        state = load_file(folder / files["custom_diffusion"])
        state.update({name: {} for name in pipe.unet.attn_processors if not any(k.startswith(name) for k in state)})
        pipe.unet.load_attn_procs(state, _pipeline=pipe)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


def main() -> None:
    jobs, pictures = json.loads(Path(sys.argv[1]).read_text()), {}
    for job in jobs:
        pipe = load(job["base"], Path(job["concept"]), job.get("lora_role", "lora"))
        generator = torch.Generator("cpu").manual_seed(0)
        steps, scale = job.get("steps", 2), job.get("guidance_scale", 7.5)
        image = pipe(job["prompt"], num_inference_steps=steps, guidance_scale=scale, generator=generator).images[0]
        pictures[job["name"]] = np.asarray(image)
    assert "retouch" not in sys.modules, "the plain loader imported retouch"
    np.savez(sys.argv[2], **pictures)


if __name__ == "__main__":
    main()

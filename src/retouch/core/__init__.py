"""The shared denoising core: schedulers, prompts, and generation."""

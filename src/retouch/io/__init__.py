"""Files: images in, PNGs with recipes out, atomic writes."""

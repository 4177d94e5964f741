"""Image quality metrics."""

"""Model loading (bundled, folder, single file, hub) and tiny random models for tests."""

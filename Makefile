# make demo: generate a few pictures with the bundled model (or a labelled placeholder).
# make test: ruff, then the test suite (the web UI's tests drive Debian's chromium; without it they
# are skipped with a loud line; .ci/run installs it, so CI always runs them).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUNDLED := src/retouch/assets/shapes-64/model_index.json
PLACEHOLDER := outputs/placeholder-model
DEMO_OUT := outputs/demo
# The bundled model when it is installed, else a tiny random placeholder.
DEMO_MODEL := $(if $(wildcard $(BUNDLED)),shapes-64,$(PLACEHOLDER))

.PHONY: demo test .venv chromium

.venv: $(STAMP)

# Runs once (and again when pyproject.toml changes). torch==2.13.0 is pinned in pyproject.toml,
# so pip takes the CPU wheel instead of a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

test: .venv chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

# The browser the web UI's tests drive (Playwright's own browser downloads are not used).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "################################################################################"; \
		echo "# SKIPPED: no Chromium. The web UI's browser tests are skipped on this machine."; \
		echo "# Install Debian's browser to run them: sudo apt-get install -y chromium"; \
		echo "################################################################################"; \
	fi

demo: .venv $(if $(wildcard $(BUNDLED)),,$(PLACEHOLDER)/model_index.json)
ifeq ($(DEMO_MODEL),$(PLACEHOLDER))
	@echo "################################################################################"
	@echo "# PLACEHOLDER MODEL: the bundled shapes-64 model is not installed yet"
	@echo "# ($(BUNDLED) is missing)."
	@echo "# This demo uses a tiny RANDOM model from $(PLACEHOLDER): its pictures are"
	@echo "# noise, NOT the trained model's output. Install the trained shapes-64 folder"
	@echo "# at src/retouch/assets/shapes-64/ and run 'make demo' again."
	@echo "################################################################################"
endif
	rm -rf $(DEMO_OUT)
	$(BIN)/retouch generate "a large red circle on a blue background" --seed 1 \
		--scheduler euler --model $(DEMO_MODEL) --output $(DEMO_OUT)
	$(BIN)/retouch generate "a small yellow triangle on a purple background, pastel" --seed 2 \
		--scheduler euler --model $(DEMO_MODEL) --output $(DEMO_OUT)
	$(BIN)/retouch generate "a large green square on a white background" --seed 3 \
		--scheduler euler --model $(DEMO_MODEL) --output $(DEMO_OUT)
	@# the main job: change what the captions differ in, keep every other pixel
	$(BIN)/python -c 'from PIL import Image; from retouch.worlds.shapes64 import Scene; \
		Image.fromarray(Scene("blue", "red", "circle", "large", 14, 10).render()).save("$(DEMO_OUT)/input.png")'
	$(BIN)/retouch edit $(DEMO_OUT)/input.png --source "a large red circle on a blue background" \
		--target "a large red circle on a green background" --seed 1 \
		--model $(DEMO_MODEL) --output $(DEMO_OUT)/edit-background.png
	$(BIN)/retouch edit $(DEMO_OUT)/input.png --source "a large red circle on a blue background" \
		--target "a large yellow circle on a blue background" --seed 1 \
		--model $(DEMO_MODEL) --output $(DEMO_OUT)/edit-foreground.png
	@echo
	@echo "Demo pictures are in $(DEMO_OUT)/ (model: $(DEMO_MODEL)): three generations, and the"
	@echo "edits of input.png in edit-*.png with their .mask.png, .layer.png and .json report."
ifeq ($(DEMO_MODEL),$(PLACEHOLDER))
	@echo "!!! They come from the random PLACEHOLDER model, not the trained shapes-64 model. !!!"
endif
	@echo "Each PNG carries its recipe: 'retouch replay $(DEMO_OUT)/00000-1.png' re-creates it."

$(PLACEHOLDER)/model_index.json: | .venv
	$(BIN)/python -c 'from retouch.models.tiny import save_tiny_pipeline; \
		save_tiny_pipeline("$(PLACEHOLDER)", sample_size=32)'

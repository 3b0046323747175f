# Two commands for a fresh machine: `make test` and `make demo`.
# Both create .venv from requirements.txt the first time; later runs reuse it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: test demo clean-venv

# The venv is rebuilt only when requirements.txt changes.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# The end-to-end demo on the embedded synthetic faces, CPU presets. It runs the stages that
# exist so far (stage 1: pixel DDPM; stage 2: the autoencoder, shortened to 300 steps to keep
# the demo near a quarter of an hour); later stages add their lines here.
DEMO := runs/demo
demo: $(VENV)/.installed
	$(PY) train_unconditional.py --preset cpu --out $(DEMO)/unconditional
	$(PY) sample.py --ckpt $(DEMO)/unconditional/checkpoint.pt --n 64 --sampler ddim --steps 100 --eta 1 \
		--out $(DEMO)/unconditional_samples.png --trajectory
	$(PY) train_vae.py --preset cpu --steps 300 --disc-start 200 --out $(DEMO)/vae
	@echo "demo done: see $(DEMO)/unconditional_samples.png, $(DEMO)/unconditional/loss.png,"
	@echo "  $(DEMO)/vae/reconstructions/ and $(DEMO)/vae/loss.png"

clean-venv:
	rm -rf $(VENV)

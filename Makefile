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

# The whole journey on the embedded synthetic faces, offline, CPU-sized: every stage of the video
# in order, shortened so that the demo takes about a quarter of an hour on a 2-core CPU (32x32
# images everywhere, so latents are 8x8x3). Each stage prints a progress bar with the time left;
# RUN/timings.txt records each stage's wall time and RUN/README.md shows every result.
# --overwrite: a second `make demo` starts the stages over in the same folders.
DEMO := runs/demo
define stage
	@echo ""; echo "==> $(1)"
	@start=$$(date +%s); $(2) && echo "$(1) $$(( $$(date +%s) - $$start ))" >> $(DEMO)/timings.txt
endef

demo: $(VENV)/.installed
	@mkdir -p $(DEMO) && rm -f $(DEMO)/timings.txt
	$(call stage,1 pixel DDPM,$(PY) train_unconditional.py --preset cpu --steps 300 --sample-every 0 \
		--overwrite --out $(DEMO)/unconditional && $(PY) sample.py --ckpt $(DEMO)/unconditional/checkpoint.pt \
		--n 64 --steps 50 --eta 1 --out $(DEMO)/unconditional_samples.png --trajectory)
	$(call stage,2 autoencoder,$(PY) train_vae.py --preset cpu --image-size 32 --perceptual none \
		--steps 600 --disc-start 400 --eval-every 300 --overwrite --out $(DEMO)/vae)
	$(call stage,3 CLIP,$(PY) train_clip.py --preset cpu --vae $(DEMO)/vae/checkpoint.pt \
		--steps 500 --eval-every 500 --eval-images 512 --overwrite --out $(DEMO)/clip)
	$(call stage,4 latent diffusion,$(PY) train_ldm.py --preset cpu --vae $(DEMO)/vae/checkpoint.pt \
		--clip $(DEMO)/clip/checkpoint.pt --channel-mult 1 2 --attention-levels 1 --steps 1500 \
		--sample-every 500 --overwrite --out $(DEMO)/ldm)
	$(call stage,5 sampling prompts,$(PY) sample.py --ckpt $(DEMO)/ldm/checkpoint.pt \
		--prompts-file docs/demo_prompts.txt --n 8 --out $(DEMO)/prompts.png --attention-maps)
	$(call stage,6 evaluate,$(PY) evaluate.py --ckpt $(DEMO)/ldm/checkpoint.pt --n 4 \
		--combinations 8 --unconditional 64 --steps 25 --classifier-steps 1000)
	@cp docs/demo_prompts.txt $(DEMO)/prompts.txt
	$(PY) -m docs.demo_page --run $(DEMO)
	@echo "demo done: open $(DEMO)/README.md"

clean-venv:
	rm -rf $(VENV)

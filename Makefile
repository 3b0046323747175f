# Two commands for a fresh machine: `make test` and `make demo` (and `make lint`, which CI runs).
# Both create .venv from requirements.txt the first time; later runs reuse it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: test lint demo clean-venv

# The venv is rebuilt only when requirements.txt changes.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# PYTEST_ARGS: more pytest options, e.g. PYTEST_ARGS=--durations=15 (CI) or -k sampling.
test: $(VENV)/.installed
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

# ruff with the settings of pyproject.toml, installed from requirements-dev.txt into the venv.
$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .

# The whole journey on the embedded synthetic faces, offline, CPU-sized: every stage of the video
# in order, shortened to fit about a quarter of an hour on a 2-core CPU (32x32 images everywhere;
# an autoencoder with f=2, so latents are 16x16x3). Each stage prints a progress bar with the
# time left; RUN/timings.txt records each stage's wall time and RUN/README.md shows every result.
# Short runs learn most with cosine learning-rate decay and a power-function EMA (docs/ema.md);
# on a CPU with native bf16, --precision auto trains in bf16 autocast. Stage 1 is the video's
# DDPM, which pages 1-8 teach and run their exercises on; stage 4 uses flow matching, which
# learned more in the same minutes (docs/equal-time.md). SEED=1 make demo: another seed.
# --overwrite: a second `make demo` starts the stages over in the same folders.
DEMO := runs/demo
SEED ?= 0
# evaluate.py's judge, trained once per machine: every clone's demo reads it from here
JUDGES ?= $(HOME)/.cache/tiny-t2i/judges
define stage
	@echo ""; echo "==> $(1)"
	@start=$$(date +%s); $(2) && echo "$(1) $$(( $$(date +%s) - $$start ))" >> $(DEMO)/timings.txt
endef

demo: $(VENV)/.installed
	@mkdir -p $(DEMO) && rm -f $(DEMO)/timings.txt
	$(call stage,1 pixel DDPM,$(PY) train_unconditional.py --preset cpu --steps 200 \
		--ema-lengths 0.05 --lr-schedule cosine --sample-every 0 --num-samples 16 \
		--sample-steps 25 --seed $(SEED) --overwrite \
		--out $(DEMO)/unconditional && $(PY) sample.py --ckpt $(DEMO)/unconditional/checkpoint.pt \
		--n 64 --steps 50 --eta 1 --seed $(SEED) \
		--out $(DEMO)/unconditional_samples.png --trajectory)
	$(call stage,2 autoencoder,$(PY) train_vae.py --preset cpu --image-size 32 --channel-mult 1 2 \
		--perceptual none --steps 1000 --disc-start 1000 --lr 1e-3 --lr-schedule cosine \
		--eval-every 500 --seed $(SEED) --overwrite --out $(DEMO)/vae)
	$(call stage,3 CLIP,$(PY) train_clip.py --preset cpu --vae $(DEMO)/vae/checkpoint.pt \
		--steps 500 --batch-size 256 --lr 5e-4 --eval-every 500 --eval-images 512 --seed $(SEED) \
		--overwrite --out $(DEMO)/clip)
	$(call stage,4 latent diffusion,$(PY) train_ldm.py --preset cpu --vae $(DEMO)/vae/checkpoint.pt \
		--clip $(DEMO)/clip/checkpoint.pt --objective flow --ema-lengths 0.1 --steps 500 \
		--lr-schedule cosine --sample-every 0 --seed $(SEED) --overwrite --out $(DEMO)/ldm)
	$(call stage,5 sampling prompts,$(PY) sample.py --ckpt $(DEMO)/ldm/checkpoint.pt \
		--prompts-file docs/demo_prompts.txt --n 8 --seed $(SEED) --out $(DEMO)/prompts.png \
		--attention-maps)
	$(call stage,6 evaluate,$(PY) evaluate.py --ckpt $(DEMO)/unconditional/checkpoint.pt \
		--unconditional 256 --steps 25 --eta 1 --classifier-steps 1000 --judge-dir $(JUDGES) \
		&& $(PY) evaluate.py \
		--ckpt $(DEMO)/ldm/checkpoint.pt --n 8 --combinations 8 --unconditional 64 --steps 25 \
		--classifier-steps 1000 --judge-dir $(JUDGES))
	@cp docs/demo_prompts.txt $(DEMO)/prompts.txt
	$(PY) -m docs.demo_page --run $(DEMO)
	@echo "demo done: open $(DEMO)/README.md"
	@echo "what to try next (with .venv/bin/python; README.md has the same list):"
	@sed 's|runs/demo/|$(DEMO)/|g' docs/demo_next.txt

clean-venv:
	rm -rf $(VENV)

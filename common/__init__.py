"""The bottom layer: what every package of the project uses. It imports nothing of the project.

    errors        ConfigError, CheckpointError, DataError, warn, main_guard, require: bad input
                  becomes one line on stderr and exit status 2
    config        option, parse_config, require_valid: dataclass defaults -> type-checked --flags,
                  presets, and the settings checks that name a flag or a stored config
    checkpoints   save_checkpoint, load_checkpoint, load_weights: atomic writes, safe loads
                  (weights_only=True) checked before anything is allocated (SIZE_BOUNDS), a
                  full disk said plainly
    device        pick_device, autocast, make_grad_scaler, configure_backends: cuda > mps > cpu,
                  fp32 / bf16 / fp16, TF32 or --deterministic
    randomness    seed_everything, check_seed, rng_state, gaussian_noise_like: seeds, exact
                  resume, and noise that is the same on every device
    images        save_grid, save_labelled_grid, upscaled, png_bytes: images in [-1, 1] -> PNG files
    paths         check_output, output_folder: an output path is checked before any work

The layers above, each importing only from the ones below it: data, models, diffusion, training
(the run scaffold of the stage scripts), evaluation, and then the programs (the stage scripts,
sample.py, evaluate.py, explore.py with explorer/, docs/ and benchmarks/). tests/test_layers.py
checks it.

The programs import the names from the package (`from common import ConfigError, option`); inside
the packages, from the module that holds a name (`from common.errors import ConfigError`).
"""

from common.checkpoints import load_checkpoint, load_weights, save_checkpoint
from common.config import (format_config, option, parse_config, range_problems, require_valid,
                           stored_problem)
from common.device import PRECISION_CHOICES, PRECISION_HELP, autocast, pick_device, to_device
from common.errors import (CheckpointError, ConfigError, DataError, main_guard, require,
                           require_positive, warn)
from common.images import labelled_grid, png_bytes, save_grid, save_labelled_grid, upscaled
from common.paths import check_output
from common.randomness import check_seed, gaussian_noise_like, seed_everything

"""The run scaffold of the four stage scripts: the chores every training loop repeats, one idea
per file, so that each stage script stays one flat loop a reader can follow top to bottom.

    run           start_run -> Run: processes, device, OUT folder; run.resume, run.seed_or_restore,
                  run.save, run.finish, run.autocast, run.wrap...; StopFlag, due
    batches       BatchOrder: the batch of step s is a pure function of (seed, s); Prefetch
    optim         make_adam, scheduled_lr, set_lr, optimizer_step: fused Adam, lr schedules, a step;
                  load_optimizer_state, load_scaler_state: their state on --resume
    ema           EMA: moving averages of the weights (exponential, or EDM2's power function)
    logger        MetricLogger: the logging window, metrics.jsonl, the NaN stop
    plots         plot_metrics, save_attention_figure
    folders       check_new_run, lock_run: a run is never overwritten, one run per OUT at a time
    distributed   torchrun + DistributedDataParallel, used through Run
    speed         torch.compile, the clocks of where a step's time goes, the utilization

What every package uses (errors, config, checkpoints, device, randomness) is in common/, below.
The names a stage script uses are imported here: `from training import EMA, start_run, ...`.
"""

from training.batches import BatchOrder, Prefetch
from training.ema import EMA, ema_problems, length_name, power_profile, sigma_rel_to_gamma, unwrap
from training.logger import MetricLogger
from training.optim import (LR_SCHEDULES, load_optimizer_state, load_scaler_state, make_adam,
                            optimizer_step, scheduled_lr, set_lr, warmup_cosine_lr)
from training.run import StopFlag, due, start_run

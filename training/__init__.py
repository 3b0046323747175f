"""Training plumbing shared by the four stage scripts (and by sample.py and evaluate.py).

Each stage script stays one flat loop that a reader can follow top to bottom; the chores that
every loop repeats live here, one idea per file:

    errors        ConfigError, CheckpointError, main_guard, require: one-line messages, exit 2
    config        opt, parse_config: dataclass defaults -> type-checked --flags, presets
    checks        schedule_problems, unet_problems, ...: settings no model or schedule works with
    device        pick_device, autocast, make_grad_scaler: cuda > mps > cpu, fp32 / bf16 / fp16
    optim         make_adam, warmup_lr, optimizer_step: fused Adam, lr schedules, one step
    speed         maybe_compile, CompileClock, InputClock: torch.compile and where time goes
    randomness    seed_everything, rng_state, set_rng_state: exact resume
    batches       BatchSampler: the batch of step s is a pure function of (seed, s)
    distributed   setup_distributed, wrap_ddp, any_rank: torchrun + DistributedDataParallel
    ema           EMA: exponential moving average of the weights
    checkpoints   save_checkpoint, load_checkpoint, load_weights: atomic writes, safe loads,
                  the format of each kind checked on load, a full disk said plainly
    folders       output_folder, check_new_run: --out is a folder; a run is never overwritten
    logger        MetricLogger: the logging window, metrics.jsonl, the NaN stop
    plots         save_grid, plot_metrics, save_attention_figure
    run           start_run, resume_state, start_noise, StopFlag: the scaffold of a stage

Import from the module that holds a name: `from training.optim import optimizer_step`.
"""

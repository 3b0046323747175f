"""The tables evaluate.py prints, from the report it writes to eval.json."""


def print_pixel_report(report: dict) -> None:
    """The stage-1 report: the Frechet distance of the samples next to its noise floor."""
    fd = report["frechet_distance"]
    steps = "all T" if report["steps"] is None else f"{report['steps']}"
    eta = "" if report["eta"] is None else f", eta {report['eta']}"
    print(f"\nstage-1 samples ({report['sampler']}, {steps} steps{eta}), Frechet distance in the "
          f"judge's features, {fd['images_per_set']} images per set:\n"
          f"  generated vs real held-out {fd['generated_vs_real']:.3f} (bootstrap sd "
          f"{fd['generated_vs_real_spread']:.3f}); real train vs real held-out "
          f"{fd['real_train_vs_real_val']:.3f} (noise floor); ratio {fd['ratio_to_floor']:.2f}")


def print_report(report: dict) -> None:
    """The stage-4 report: prompt following, the autoencoder, the Frechet distance, CLIP score."""
    steps = "" if report["steps"] is None else f" {report['steps']} steps"
    print(f"\nprompt following at guidance {report['guidance']}, {report['sampler']}{steps} "
          f"({report['images_per_prompt']} images per prompt; judge = attribute classifier):")
    print(f"  {'prompt':58s} {'right':>6s} {'uncond':>6s} {'judge':>6s} {'divers':>6s}")
    for r in report["prompts"]["single"]:
        judge_acc = min(report["judge_val_accuracy"][n] for n in r["requirement"])
        print(f"  {r['prompt'][:58]:58s} {r['accuracy']:6.2f} {r['unconditional']:6.2f} "
              f"{judge_acc:6.2f} {r['diversity']:6.2f}")
    for group, s in report["summary"].items():
        print(f"  {group + ' (mean of ' + str(s['prompts']) + ' prompts)':58s} "
              f"{s['accuracy']:6.2f} {s['unconditional']:6.2f} {'':6s} {s['diversity']:6.2f}")
    print("  (judge: its held-out accuracy on the prompt's attributes, the lowest of them; "
          "divers: diversity, generated over real)")
    ae = report["autoencoder"]
    print(f"autoencoder on {ae['images']} held-out images: PSNR {ae['psnr']:.2f} dB; attribute "
          "preservation (judge's held-out accuracy):")
    for name, kept in ae["attribute_preservation"].items():
        print(f"  {name:18s} {kept:5.3f} ({report['judge_val_accuracy'][name]:.3f})")
    fd = report["frechet_distance"]
    print(f"Frechet distance in the judge's features ({fd['images_per_set']} images per set): "
          f"generated {fd['generated_vs_real']:.3f} (bootstrap sd "
          f"{fd.get('generated_vs_real_spread', float('nan')):.3f}), "
          f"unconditional {fd['unconditional_vs_real']:.3f}, real train vs val "
          f"{fd['real_train_vs_real_val']:.3f} (noise floor)")
    if report["clip_score"]:
        c = report["clip_score"]
        print(f"CLIP score (cosine): generated {c['generated']:.3f}, real images with their "
              f"captions {c['real_with_own_captions']:.3f}, unconditional samples with the same "
              f"prompts {c['unconditional_with_the_prompts']:.3f}")


def print_own_captions_report(report: dict) -> None:
    """The three CLIP measures of own_captions_report, each beside its reference rows."""
    rates, scores, frechet = (report[key] for key in ("caption_retrieval", "clip_score",
                                                       "frechet_distance_clip"))
    K = len(report["captions"])
    print(f"\nprompt following on your own captions, judged by the model's CLIP "
          f"({report['judge']}); no attribute rows, so no judge:")
    print(f"  caption retrieval (own caption closest of {K}; chance {rates['chance']:.3f}):")
    for name in ("generated", "real_held_out", "unconditional"):
        print(f"    {name.replace('_', ' '):16s} {rates[name]:.3f}")
    print("  CLIP score (cosine of image and caption):")
    print(f"    generated        {scores['generated']:.3f}")
    print(f"    real held out    {scores['real_with_own_captions']:.3f} (with their own captions)")
    print(f"    unconditional    {scores['unconditional_with_the_prompts']:.3f} "
          "(with every caption)")
    print(f"  Frechet distance in CLIP image features ({frechet['images_per_set']} per set):")
    print(f"    generated        {frechet['generated_vs_real']:.4f} "
          f"(+- {frechet['generated_vs_real_spread']:.4f}, {frechet['ratio_to_floor']:.2f}x "
          "the floor)")
    print(f"    unconditional    {frechet['unconditional_vs_real']:.4f}")
    print(f"    floor            {frechet['real_train_vs_real_val']:.4f} (real train vs held out)")
    print("  the project's CLIP judging the project's model: it sees what it learnt to tell "
          "apart, and is blind to the rest")

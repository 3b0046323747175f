"""The Frechet distance between real and generated images in the judge's feature space (the FID
formula, Heusel et al. 2017, with the project's small classifier instead of Inception: comparable
between runs of this project, not with published FIDs), next to its noise floor: the distance
between real training and real held-out images. The same report for stage 1 and stage 4.

Every set of one report has the same size k (evenly spaced picks): the estimate grows as the sets
shrink, so distances computed from different sizes would not compare.
"""

import torch

from models.metrics import feature_statistics, frechet_distance, frechet_distance_spread


def evenly_spaced(count: int, k: int) -> torch.Tensor:
    """k indices (k,) spread evenly over 0..count-1, first and last included."""
    return torch.linspace(0, count - 1, k).round().long()


def frechet_report(features: dict[str, torch.Tensor]) -> dict:
    """Judge features (k, F) of the sets "real" (held-out images), "real_train", "generated"
    and, for a text model, "unconditional" -> the distances of each to "real", with the
    bootstrap spread of the generated one (how far it moves with the draw of images) and its
    ratio to the noise floor (real train vs real held-out)."""
    statistics = {name: feature_statistics(f) for name, f in features.items()}
    report = {"images_per_set": len(features["real"]),
              "generated_vs_real": frechet_distance(*statistics["generated"], *statistics["real"]),
              "generated_vs_real_spread": frechet_distance_spread(features["generated"],
                                                                  features["real"])}
    if "unconditional" in features:
        report["unconditional_vs_real"] = frechet_distance(*statistics["unconditional"],
                                                           *statistics["real"])
    report["real_train_vs_real_val"] = frechet_distance(*statistics["real_train"],
                                                        *statistics["real"])
    report["ratio_to_floor"] = report["generated_vs_real"] / report["real_train_vs_real_val"]
    return report

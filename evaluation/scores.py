"""Scores of generated images: does each image meet its prompt's requirement (prompt following),
how varied are one prompt's images (diversity), how close are image and prompt in the CLIP space
(CLIP score), and what of each attribute survives the autoencoder (preservation). [P16] [P10]

Images are passed as a mapping {prompt: images}, so a score always reads the images of its own
prompt, whatever order they were generated in.
"""

import torch

from data import ImageDataset
from data.captions import full_caption
from diffusion.pipeline import Pipeline
from evaluation.frechet import evenly_spaced
from evaluation.judge import judge_images
from models.clip import TrainedCLIP, encode_images
from models.clip_eval import embed_texts
from models.metrics import attribute_preservation, diversity_ratio, psnr


def meets(probabilities: torch.Tensor, requirement: dict[str, bool],
          names: list[str]) -> torch.Tensor:
    """(N, A) judge probabilities (or labels in {0, 1}) -> (N,) bool: does each image meet every
    part of the requirement (attribute present when True, absent when False)?"""
    right = torch.ones(len(probabilities), dtype=torch.bool)
    for name, wanted in requirement.items():
        right &= (probabilities[:, names.index(name)] > 0.5) == wanted
    return right


def prompt_diversity(generated: torch.Tensor, real_meets: torch.Tensor,
                     real_features: torch.Tensor, most: int) -> float:
    """Diversity of one prompt's images: the mean pairwise distance of their judge features (n, F)
    over that of up to `most` real held-out images that meet the same requirement (real_meets,
    (N,) bool by their labels; real_features (N, F), the judge's features of every held-out
    image), evenly spaced among them. NaN when either side has fewer than 2 images."""
    indices = real_meets.nonzero().flatten()
    indices = indices[evenly_spaced(len(indices), min(most, len(indices)))]
    if len(indices) < 2 or len(generated) < 2:
        return float("nan")
    return diversity_ratio(generated, real_features[indices])


def prompt_following(groups: dict[str, list[dict]], judged: dict[str, tuple], unconditional,
                     rows: torch.Tensor, held_out_features: torch.Tensor, names: list[str],
                     diversity_reference: int) -> tuple[dict, dict]:
    """Per group of requirements (single, pair, triple) and per requirement: the share of its
    prompt's images that meet it (accuracy), the share of unconditional images that happen to
    (what ignoring the text scores), the share of real held-out rows that do (data_rate), and
    the diversity. judged: {prompt: (probabilities (n, A), features (n, F))}; unconditional:
    probabilities (M, A); rows: the held-out labels (N, A). Returns (results, summary)."""
    results = {}
    for group, requirements in groups.items():
        results[group] = []
        for requirement in requirements:
            prompt = full_caption(requirement)
            probabilities, features = judged[prompt]
            real = meets(rows.float(), requirement, names)        # labels: the data's own rate
            results[group].append({
                "prompt": prompt, "requirement": requirement,
                "accuracy": meets(probabilities, requirement, names).float().mean().item(),
                "unconditional": meets(unconditional, requirement, names).float().mean().item(),
                "data_rate": real.float().mean().item(),
                "diversity": prompt_diversity(features, real, held_out_features,
                                              diversity_reference)})
    summary = {group: {key: sum(r[key] for r in rs) / len(rs)
                       for key in ("accuracy", "unconditional", "diversity")} | {"prompts": len(rs)}
               for group, rs in results.items() if rs}
    return results, summary


@torch.no_grad()
def clip_image_vectors(clip: TrainedCLIP, images: torch.Tensor, device, chunk: int) -> torch.Tensor:
    """Images (N, 3, S, S) -> unit vectors (N, E) of the project's CLIP, on the CPU."""
    return torch.cat([encode_images(clip.clip, clip.vae, images[i:i + chunk].to(device),
                                    clip.scale_factor).float().cpu()
                      for i in range(0, len(images), chunk)])


def clip_score(clip: TrainedCLIP, images: torch.Tensor, prompts: list[str], device,
               chunk: int) -> torch.Tensor:
    """[P15] (N,) cosine similarity between each image and its prompt in the CLIP space."""
    texts = embed_texts(clip.clip, clip.tokenizer, prompts, device).cpu()
    return (clip_image_vectors(clip, images, device, chunk) * texts).sum(-1)


def clip_score_of(image_vectors: torch.Tensor, text_vectors: torch.Tensor) -> float:
    """[P15] The CLIP score of unit vectors already computed: the mean cosine of image i (N, E)
    and text i (N, E)."""
    return (image_vectors * text_vectors).sum(-1).mean().item()


def clip_scores(clip: TrainedCLIP, images: dict[str, torch.Tensor], unconditional: torch.Tensor,
                real_images: torch.Tensor, real_captions: list[str], device, chunk: int) -> dict:
    """The mean CLIP score of the generated images with their prompts, of real images with their
    own captions, and of every unconditional image with every prompt (what ignoring the text
    scores)."""
    prompts = list(images)
    per_image_prompts = [p for p in prompts for _ in range(len(images[p]))]
    generated = torch.cat([images[p] for p in prompts])
    return {"generated": clip_score(clip, generated, per_image_prompts, device, chunk).mean().item(),
            "real_with_own_captions": clip_score(clip, real_images, real_captions, device,
                                                 chunk).mean().item(),
            "unconditional_with_the_prompts": (
                clip_image_vectors(clip, unconditional, device, chunk)
                @ embed_texts(clip.clip, clip.tokenizer, prompts, device).cpu().T).mean().item()}


@torch.no_grad()
def autoencoder_report(pipe: Pipeline, held_out: ImageDataset, classifier, count: int, device,
                       batch_size: int, chunk: int) -> dict:
    """[P10] What survives the latents: held-out PSNR of mode reconstructions of `count` evenly
    spaced images, and per attribute the share of them the judge reads the same way before and
    after (attribute preservation)."""
    originals, reconstructions = [], []
    for indices in evenly_spaced(len(held_out), count).split(batch_size):
        x = held_out.batch(indices, device)["image"]
        originals.append(x.cpu())
        reconstructions.append(pipe.vae(x, sample_posterior=False)[0].float().clamp(-1, 1).cpu())
    originals, reconstructions = torch.cat(originals), torch.cat(reconstructions)
    preserved = attribute_preservation(judge_images(classifier, originals, device, chunk)[0],
                                       judge_images(classifier, reconstructions, device, chunk)[0])
    return {"images": count, "psnr": psnr(originals, reconstructions).mean().item(),
            "attribute_preservation": dict(zip(held_out.attribute_names, preserved.tolist()))}


def caption_retrieval(image_vectors: torch.Tensor, caption_vectors: torch.Tensor,
                      truth: torch.Tensor) -> torch.Tensor:
    """[P15] For data without attributes: is the closest of K captions (K, E) in the CLIP space
    the one each image (N, E) was made or taken for (truth (N,), caption indices)? -> (N,) bool.
    Chance is 1/K (images that ignore the text)."""
    return (image_vectors @ caption_vectors.T).argmax(1) == truth                   # (N, K) -> (N,)

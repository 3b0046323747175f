"""The judge: an attribute classifier (models/classifier.py) trained on real images of the dataset
a model was trained on, cached next to the data, and loaded again by later evaluations.

Its held-out accuracy per attribute is part of every report: a judge is only as good as that.
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.checkpoints import (entries_problem, load_checkpoint, load_weights, save_checkpoint,
                                weights_problem)
from common.errors import CheckpointError, ConfigError
from data import ImageDataset, load_dataset
from data.imagefolder import VAL_PERCENT
from data.augment import augment
from data.files import make_folder
from models.classifier import AttributeClassifier
from training.optim import scheduled_lr, set_lr

ENTRIES = {"model": dict, "num_attributes": int, "steps": int, "val_accuracy": dict}  # a cached judge


def judge_problem(state: dict) -> str | None:
    """What keeps a cached judge from being rebuilt (load_checkpoint's check), or None: one output
    per attribute name, and the weights of that classifier."""
    problem = entries_problem(state, ENTRIES, "it")
    names = state.get("attribute_names")
    if problem is None and not (isinstance(names, list) and len(names) == state["num_attributes"]):
        problem = (f"it has num_attributes {state['num_attributes']}: expected one per attribute "
                   f"name ({len(names) if isinstance(names, list) else 'none'})")
    return problem or weights_problem({"model": state["model"]}, lambda: AttributeClassifier(
        state["num_attributes"]), "judge")


def train_judge(train: ImageDataset, held_out: ImageDataset, steps: int, device, lr: float,
                batch_size: int, chunk: int) -> dict:
    """Train the attribute classifier on real images (binary cross-entropy per attribute, AdamW,
    cosine decay from lr to 0 with no warm-up); returns its checkpoint dict, with its held-out
    accuracy per attribute. chunk: held-out images classified at once."""
    torch.manual_seed(0)
    model = AttributeClassifier(train.attributes.shape[1]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    for step in tqdm(range(steps), desc="training the judge", leave=False):
        indices = torch.randint(0, len(train), (batch_size,), generator=generator)
        batch = train.batch(indices, device)
        x = augment(batch["image"], max_rotation_deg=5.0)
        labels = (batch["attributes"] > 0).float()
        loss = F.binary_cross_entropy_with_logits(model(x), labels)
        set_lr(optimizer, scheduled_lr("cosine", step, lr, warmup_steps=0, total_steps=steps))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    probabilities, _ = judge_dataset(model, held_out, device, chunk)
    labels = torch.from_numpy(held_out.attributes) > 0
    accuracy = ((probabilities > 0.5) == labels).float().mean(0)
    return {"kind": "classifier", "model": model.state_dict(), "num_attributes": labels.shape[1],
            "attribute_names": train.attribute_names, "steps": steps, "lr": lr,
            "batch_size": batch_size,
            "val_accuracy": {name: accuracy[i].item() for i, name in enumerate(train.attribute_names)}}


def cached_judge(path: Path, attribute_names: list[str], settings: dict) -> tuple[dict | None, str]:
    """(the judge cached at `path`, "") when it was trained on these attributes with these
    settings (steps, lr, batch_size), else (None, why not): no file, other attributes or settings,
    or a cache that cannot be read (a torn write, another kind of file), which is then written
    over."""
    if not path.is_file():
        return None, f"no judge cached at {path}"
    try:
        state = load_checkpoint(path, kind="classifier", check=judge_problem)
    except CheckpointError as error:
        return None, f"the judge cached at {path} cannot be read ({error})"
    if state.get("attribute_names") != attribute_names:
        return None, f"the judge cached at {path} judges other attributes"
    stored = {name: state.get(name) for name in settings}
    if stored != settings:
        return None, f"the judge cached at {path} was trained with {stored}, not {settings}"
    return state, ""


def judge_path(folder: Path, data_name: str, size: int, settings: dict) -> Path:
    """Where the judge of a dataset is cached: one file per (data, size, steps, lr, batch_size),
    everything that defines it (its architecture, seed and augmentation are fixed), so that a judge
    trained otherwise is never read, nor written over, in its place."""
    data = data_name.replace("/", "_").replace(":", "_")
    return Path(folder) / (f"classifier-{data}-{size}px-{settings['steps']}steps-"
                           f"lr{settings['lr']:g}-batch{settings['batch_size']}.pt")


def load_judge(data: str, size: int, cache_dir: Path, steps: int, device, retrain: bool,
               lr: float, batch_size: int, chunk: int,
               judge_dir: Path | None = None,
               val_percent: int = VAL_PERCENT) -> tuple[AttributeClassifier, dict]:
    """The judge of `data` at `size` pixels: from its cache (JUDGE_DIR, default the data's
    CACHE_DIR; the file judge_path names), or trained for `steps` and cached there.
    Returns (classifier in eval mode, its state)."""
    train = load_dataset(data, size, split="train", cache_dir=cache_dir, val_percent=val_percent)
    if train.attributes is None:
        raise ConfigError(f"the dataset {data} has no attribute labels: evaluate.py judges "
                          "attributes (synthetic faces or CelebA)")
    settings = {"steps": steps, "lr": lr, "batch_size": batch_size}
    path = judge_path(make_folder(judge_dir or cache_dir), train.name, size, settings)
    state, why = (None, "--retrain-judge") if retrain else cached_judge(
        path, train.attribute_names, settings)
    if state is None:
        print(f"judge: training one ({why}): {steps} steps of {batch_size} real images at lr "
              f"{lr:g}, then cached in {path}")
        held_out = load_dataset(data, size, split="val", cache_dir=cache_dir,
                                val_percent=val_percent)
        started = time.time()
        state = train_judge(train, held_out, steps, device, lr, batch_size, chunk)
        save_checkpoint(path, state)
        print(f"trained the judge in {time.time() - started:.0f} s, cached in {path}")
    else:
        print(f"judge: loaded {path} ({steps} steps of {batch_size} at lr {lr:g}; mean held-out "
              f"accuracy {sum(state['val_accuracy'].values()) / len(state['val_accuracy']):.3f})")
    model = AttributeClassifier(state["num_attributes"])
    load_weights(model, state["model"], f"judge {path}")
    return model.to(device).eval().requires_grad_(False), state


def judge_dataset(classifier: AttributeClassifier, dataset: ImageDataset, device,
                  chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """judge_images of every image of `dataset`, read from its cache `chunk` images at a time
    (a held-out split of CelebA at 128 px would be gigabytes at once)."""
    parts = [judge_images(classifier, dataset.batch(indices, "cpu")["image"], device, chunk)
             for indices in torch.arange(len(dataset)).split(chunk)]
    return torch.cat([p for p, _ in parts]), torch.cat([f for _, f in parts])


@torch.no_grad()
def judge_images(classifier: AttributeClassifier, images: torch.Tensor, device,
                 chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S) -> the judge's probabilities (N, A) and features (N, F), on the CPU,
    `chunk` images at a time."""
    probabilities, features = [], []
    for i in range(0, len(images), chunk):
        f = classifier.features(images[i:i + chunk].to(device))
        features.append(f.cpu())
        probabilities.append(torch.sigmoid(classifier.head(f)).cpu())
    return torch.cat(probabilities), torch.cat(features)

"""Cached, chunked experiment steps shared by the book's notebooks.

Notebooks describe *what* to run (model, data, pairs, attack options); this module runs it in
chunks that fit the device, shows progress, and caches results on disk
(:func:`featadv_core.repro.cached`, keyed by the options, the input images' hash, the model's
checkpoint hash and the code that computes them), so a rebuild or a figure tweak never
recomputes. Long runs cache **each chunk** on its own (:func:`cached_chunks`): a run killed
halfway resumes at the first unfinished chunk, and since every entry is written atomically, a
kill never leaves a half-written entry that a rerun could read. Under ``torchrun`` the chunks are
shared out among the processes (:func:`featadv_core.repro.cached_chunks`), and every process
returns the whole result.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import attacks, data, distributed, metrics
# the one analysis module runs call, imported alone: a cached run's code fingerprint follows imports, and the
# analysis package also holds the claims' statistics (uncertainty), which no attack runs
from .analysis.curvature import Curvatures, principal_curvatures
from .attacks.pgd import OBJECTIVES as PGD_OBJECTIVES
from .features import extract, model_dtype
from .labels import predict_labels
from .metrics.distances import flatten
from .repro import cached, cached_chunks, model_hash, tensor_hash

__all__ = ["ATTACKS", "load_images", "class_names", "tensor_hash", "batched_features", "cached_features", "cached_chunks", "predict",
           "run_attack", "run_attempts", "run_detailed", "run_deepfool", "run_curvatures", "run_style_attack", "run_pgd"]

ATTACKS = {
    "feature_opt": attacks.feature_opt,
    "feature_linear": attacks.feature_linear,
    "label_opt": attacks.label_opt,
}


def _folder(dataset: str) -> Path:
    root = Path(dataset).expanduser()
    if not root.is_dir():
        raise ValueError(f"dataset {dataset!r} is neither one of {', '.join(data.DATASETS)} nor a folder")
    return root


def load_images(dataset: str, split: str, *, n: int | None = None, seed: int = 0,
                label_space: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset split by name (``"cifar10"``, ...) or, for paper-scale runs, a folder path.

    A folder is read as ``<dataset>/<split>/<class>/<image>`` with
    :func:`featadv_core.data.load_image_folder` (ImageNet preprocessing); class folders named by
    ImageNet WordNet ids get ImageNet's labels (``label_space``, see there), so an ILSVRC subset's
    labels are an ImageNet network's outputs.
    """
    if dataset in data.DATASETS:
        return data.load(dataset, split, n=n, seed=seed)
    x, y, _ = data.load_image_folder(_folder(dataset) / split, n=n, seed=seed, label_space=label_space)
    return x, y


def class_names(dataset: str, split: str = "train", *, label_space: str = "auto") -> list[str]:
    """The names of the labels :func:`load_images` gives for ``dataset``: a built-in dataset's classes;
    for a folder in ImageNet's label space the 1,000 ImageNet class names, else its class folders."""
    if dataset in data.DATASETS:
        return data.class_names(dataset)
    classes, space = data.image_folder_classes(_folder(dataset) / split, label_space)
    return data.imagenet_class_names() if space == "imagenet" else classes


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def batched_features(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str], *,
                     batch_size: int = 256, progress: bool = False) -> dict[str, torch.Tensor]:
    """Flattened features (N×D, on the CPU) of ``x`` at ``layers``, computed in chunks."""
    names = [layers] if isinstance(layers, str) else list(layers)
    device, dtype = _device_of(model), model_dtype(model, x.dtype)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for i in tqdm(range(0, len(x), batch_size), desc="features", disable=not progress, leave=False):
        feats = extract(model, x[i:i + batch_size].to(device=device, dtype=dtype), names)
        for name in names:
            parts[name].append(flatten(feats[name]).cpu())
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def cached_features(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str], *,
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """:func:`batched_features`, cached on disk (for the big sets: a dataset's training images)."""
    names = [layers] if isinstance(layers, str) else list(layers)
    return cached("features", {"layers": names, "images": tensor_hash(x)},
                  lambda: batched_features(model, x, names, progress=progress), model=model,
                  code=(batched_features,))


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Predicted labels (argmax of the logits) of ``x``, computed on the model's device, on the CPU."""
    return predict_labels(model, x, batch_size=batch_size, device=_device_of(model)).cpu()


def run_attack(attack: str, model: nn.Module, x_src: torch.Tensor, other: torch.Tensor, *,
               batch_size: int = 128, cache: bool = True, progress: bool = True, **options) -> torch.Tensor:
    """Run ``attacks.<attack>(model, x_src, other, **options)`` in chunks, each cached on disk.

    ``other`` is the guide images (``feature_opt``, ``feature_linear``) or the target labels
    (``label_opt``). Returns the adversaries on the CPU, in ``x_src``'s order. Killed halfway,
    a rerun recomputes only the unfinished chunks (:func:`cached_chunks`).
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; valid: {', '.join(ATTACKS)}")
    fn = ATTACKS[attack]
    device = _device_of(model)

    def compute(xs: torch.Tensor, other_chunk: torch.Tensor) -> torch.Tensor:
        return fn(model, xs.to(device), other_chunk.to(device), progress=progress, **options)

    return cached_chunks(attack, {"attack": attack, "options": options}, [x_src, other], compute,
                         batch_size=batch_size, model=model, code=(fn, run_attack), cache=cache,
                         progress=progress)


def _with_pass(out: dict[str, torch.Tensor], origins: torch.Tensor) -> dict[str, torch.Tensor]:
    """Add ``pass`` (PASS of every returned uint8 image against its origin) and ``ecc_failed``.

    An unsuccessful row that returned its origin bit for bit (a failed line search) gets
    PASS(x, x) = 1 and no ECC failure without computing them (an identical pair costs as much as
    a perturbed one); perturbed unsuccessful rows (an iterative LOTS's last iterate, ``lots_self``
    at a fixed ε) are scored.
    """
    adv = out["images"].float() / 255
    same = (adv == origins.to(adv.dtype)).flatten(1).all(1)  # the attack returned its origin (bitwise)
    if "success" in out:
        same &= ~out["success"]  # never skip a success
    scores = torch.ones(len(adv), dtype=torch.float64)  # PASS(x, x) = 1
    failed = torch.zeros(len(adv), dtype=torch.bool)
    todo = (~same).nonzero().flatten()
    if len(todo):
        scores[todo], failed[todo] = metrics.pass_score(adv[todo], origins[todo], details=True)
    return dict(out, **{"pass": scores, "ecc_failed": failed})


def run_attempts(model: nn.Module, x: torch.Tensor, x_targets: torch.Tensor, *, layers: Sequence[str],
                 kinds: Sequence[str] = attacks.KINDS, batch_size: int = 50, cache: bool = True,
                 progress: bool = True, **options) -> dict[str, torch.Tensor]:
    """:func:`featadv_core.attacks.all_attempts` on ``x`` in chunks of ``batch_size`` origins, with PASS.

    Each chunk (its attempts and the PASS of every returned image, with the ECC failure flags)
    is cached on its own (:func:`cached_chunks`); ``origin`` indexes ``x``.
    ``options`` go to ``all_attempts`` (line-search settings).
    """
    device = _device_of(model)
    index = torch.arange(len(x))

    def compute(xs: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        out = attacks.all_attempts(model, xs.to(device), x_targets.to(device), layers=layers, kinds=kinds,
                                   **options)
        out = _with_pass({k: v.cpu() for k, v in out.items()}, xs.cpu()[out["origin"].cpu()])
        out["origin"] = idx[out["origin"]]
        return out

    params = {"targets": tensor_hash(x_targets), "layers": list(layers), "kinds": list(kinds), "options": options}
    return cached_chunks("attempts", params, [x, index], compute, batch_size=batch_size, model=model,
                         code=(attacks.all_attempts, run_attempts), cache=cache, progress=progress)


def run_detailed(attack: Callable, model: nn.Module, inputs: Sequence[torch.Tensor], *, batch_size: int = 256,
                 cache: bool = True, progress: bool = True, **options) -> dict[str, torch.Tensor]:
    """``attack(model, *inputs, details=True, **options)`` in cached chunks, as columns with PASS.

    For the line-search attacks (:func:`~featadv_core.attacks.lots`, ``lots_self``, ``fgs``,
    ``fgv``, ``hot_cold``): returns the :class:`~featadv_core.attacks.Attempts` fields as
    columns (``images`` as uint8 grey levels) plus ``pass`` (of every returned image; 1 where a
    search failed and returned the origin) and ``ecc_failed``. ``inputs[0]`` are the origins.
    """
    device = _device_of(model)

    def compute(*chunk: torch.Tensor) -> dict[str, torch.Tensor]:
        _, res = attack(model, *(t.to(device) for t in chunk), details=True, **options)
        out = {k: v.cpu() for k, v in vars(res).items()}
        out["images"] = torch.round(out["images"].double() * 255).to(torch.uint8)
        return _with_pass(out, chunk[0].cpu())

    name = getattr(attack, "__name__", "attack")
    return cached_chunks(name, {"attack": name, "options": options}, list(inputs), compute, batch_size=batch_size,
                         model=model, code=(attack, run_detailed), cache=cache, progress=progress)


def run_deepfool(model: nn.Module, x: torch.Tensor, *, target: torch.Tensor | None = None,
                 basis: torch.Tensor | None = None, batch_size: int = 250, cache: bool = True,
                 progress: bool = True, **options) -> dict[str, torch.Tensor]:
    """:func:`featadv_core.attacks.deepfool` on ``x`` in cached chunks, as columns of its details.

    Columns: ``perturbation`` (``x_adv − x``), ``clean_label``, ``label``, ``iterations``,
    ``success``, ``norm``. ``target`` (one class per image) selects the targeted variant,
    ``basis`` confines it; ``options`` go to ``deepfool`` (``overshoot``, ``max_iter``,
    ``candidates``, ``box``).
    """
    device = _device_of(model)
    q = None if basis is None else basis.to(device)
    inputs = [x] if target is None else [x, torch.as_tensor(target).long().expand(len(x))]

    def compute(xs: torch.Tensor, *t: torch.Tensor) -> dict[str, torch.Tensor]:
        _, res = attacks.deepfool(model, xs.to(device), target=t[0].to(device) if t else None, basis=q,
                                  details=True, **options)
        return {k: v.cpu() for k, v in vars(res).items()}

    params = {"options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
              "basis": None if basis is None else tensor_hash(basis), "targeted": target is not None}
    # keyed by the attack's code (followed through its imports), not this wrapper's module, which
    # imports every attack: an unrelated change elsewhere in the core keeps the results
    return cached_chunks("deepfool", params, inputs, compute, batch_size=batch_size, model=model,
                         code=(attacks.deepfool,), cache=cache, progress=progress)


def run_curvatures(model: nn.Module, x: torch.Tensor, classes: Sequence[int], *, cache: bool = True,
                   progress: bool = True, **options) -> dict[int, Curvatures]:
    """Algorithm 1 (:func:`featadv_core.analysis.principal_curvatures`) for every class, each cached on disk.

    ``x`` are the (training) images Algorithm 1 samples from; ``options`` its keywords
    (``h``, ``n_samples``, ``method``, ``k``, ``seed`` …). The key covers them, the images' hash,
    the model's weights and the code, so every chapter-4 notebook shares one computation. Under
    ``torchrun`` the classes are shared out (rank r computes the k-th class with k mod K = r) and
    every rank returns all of them.
    """
    device = _device_of(model)
    images = tensor_hash(x)
    classes = [int(c) for c in classes]
    r, size = distributed.world() if cache else (0, 1)

    def one(c: int) -> Curvatures:
        run = lambda: principal_curvatures(model, x.to(device), c, progress=False, **options)  # noqa: E731
        if not cache:
            return run()
        with distributed.solo():  # this rank alone: the class is its share, or already on disk
            return cached("curvatures", {"images": images, "class": c, "options": options}, run, model=model,
                          code=(principal_curvatures,))

    mine = [c for k, c in enumerate(classes) if k % size == r]
    out = {c: one(c) for c in tqdm(mine, desc="Algorithm 1 (classes)", disable=not progress or not distributed.is_main(),
                                   leave=False)}
    if size > 1:
        distributed.barrier()
        out.update({c: one(c) for c in classes if c not in out})
    return {c: out[c] for c in classes}


def run_style_attack(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, decoder: nn.Module,
                     prototypes: torch.Tensor | None = None, target: torch.Tensor | None = None, batch_size: int = 64,
                     cache: bool = True, progress: bool = True, **options) -> dict[str, torch.Tensor]:
    """The feature-space attack (``kind`` ``"fa"``: :func:`~featadv_core.attacks.feature_augmentation`,
    ``"fi"``: :func:`~featadv_core.attacks.feature_interpolation` with per-image ``prototypes``) in cached chunks.

    Columns: ``images``, ``success``, ``content`` (the kept iterate's content loss), ``first_success``
    (the step after which each image first succeeded; ``steps + 1``: never). ``y`` are the true labels,
    ``target`` optional per-image targets; ``options`` go to the attack. The key covers the options,
    the images, the classifier's and the decoder's weights and the attack's code.
    """
    if kind not in ("fa", "fi"):
        raise ValueError(f"kind must be 'fa' or 'fi', got {kind!r}")
    if kind == "fi" and prototypes is None:
        raise ValueError("feature interpolation needs per-image prototypes (attacks.class_prototypes)")
    device = _device_of(model)
    attack = attacks.feature_augmentation if kind == "fa" else attacks.feature_interpolation
    inputs = [x, y] + ([torch.as_tensor(target).long()] if target is not None else []) \
        + ([prototypes] if kind == "fi" else [])

    def compute(xs, ys, *rest):
        rest = list(rest)
        tgt = rest.pop(0).to(device) if target is not None else None
        args = (xs.to(device), rest[0].to(device)) if kind == "fi" else (xs.to(device),)
        res = attack(model, *args, ys.to(device), decoder=decoder, target=tgt, details=True, progress=False,
                     **options)
        return {"images": res.images.cpu(), "success": res.success.cpu(), "content": res.content.cpu(),
                "first_success": res.first_success.cpu()}

    params = {"kind": kind, "options": options, "targeted": target is not None,
              "decoder": model_hash(decoder)}
    return cached_chunks(f"style-{kind}", params, inputs, compute, batch_size=batch_size, model=model,
                         code=(attack,), cache=cache, progress=progress)


def run_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float, steps: int,
            step_size: float, target: torch.Tensor | None = None, topk: int = 1, objective: str = "ce",
            kappa: float = 1.0, seed: int = 0, batch_size: int = 250, cache: bool = True,
            progress: bool = True) -> dict[str, torch.Tensor]:
    """L∞ :func:`~featadv_core.attacks.pgd` in cached chunks: columns ``images`` and ``success``.

    ``y=None`` attacks the predicted labels (O2's convention). Each chunk's random start is seeded
    from ``seed`` and the chunk's images, so it does not depend on which chunks were cached.
    ``topk``, ``objective`` (a name: ``"ce"`` or ``"margin"``, so that it can key the cache) and
    ``kappa`` are :func:`~featadv_core.attacks.pgd`'s; ``success`` is then in the top-``topk`` sense.
    """
    if objective not in PGD_OBJECTIVES:  # a name, not a callable: the cache's key must be a plain value
        raise ValueError(f"objective must be one of {PGD_OBJECTIVES}, got {objective!r}")
    device = _device_of(model)
    labels = y if y is not None else predict(model, x)
    inputs = [x, labels] + ([torch.as_tensor(target).long()] if target is not None else [])

    def compute(xs, ys, *t):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + int(tensor_hash(xs)[:12], 16))
        adv, ok, _ = attacks.pgd(model, xs.to(device), ys.to(device), eps=eps, steps=steps, step_size=step_size,
                                 target=t[0].to(device) if t else None, topk=topk, objective=objective, kappa=kappa,
                                 generator=gen, details=True)
        return {"images": adv.cpu(), "success": ok.cpu()}

    params = {"eps": eps, "steps": steps, "step_size": step_size, "seed": seed, "targeted": target is not None}
    if (topk, objective) != (1, "ce"):  # the defaults' parameters are keyed as before
        params.update(topk=topk, objective=objective, kappa=kappa if objective == "margin" else None)
    return cached_chunks("pgd", params, inputs, compute, batch_size=batch_size, model=model, code=(attacks.pgd,),
                         cache=cache, progress=progress)

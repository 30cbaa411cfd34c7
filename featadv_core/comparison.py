"""Chapter 5: the four papers' attacks on one set of source–guide pairs, measured with every paper's yardstick.

Nothing here attacks or measures by itself: every method is the core's implementation, run through
the cached runners of :mod:`featadv_core.runs`, and every measure is the core's too. This module fixes
the protocol that makes the numbers comparable:

* **Pairs** (:func:`draw_pairs`): sources and guides from one pool (the training set, so that chapter 1's
  neighbour statistics can rank against it), Table 1's protocol of chapter 1 — the guide correctly
  classified, the source's class and prediction different from the guide's class — and, in addition,
  correctly classified sources, so that "the label changed" means the same thing for every method.
* **One success criterion**: every targeted method aims at the guide's class, and an adversary
  *succeeds* when the victim predicts it. Sabour's and LOTS's adversaries aim at the guide's features,
  FSA, DeepFool and PGD at its label. FGS, Rozsa et al.'s untargeted baseline, succeeds when the label
  changes (:attr:`Method.targeted`).
* **Measures over the successful adversaries** of each method (success rates over all pairs); the
  clean sources are a reference row where a measure has a clean value (O2's false alarms, ranks,
  accuracy of other networks).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import analysis, attacks, metrics, pairs, runs
from .analysis.neighbour_stats import adversary_nn_ranks, inlier_scores
from .analysis.uncertainty import Interval, bootstrap_interval, rate_interval
from .cost import count_passes

__all__ = ["Method", "METHODS", "PairSet", "draw_pairs", "run_method", "method_cost", "success",
           "pixel_measures", "guide_distance_ratios", "embedding_distance", "naturalness", "curvature_bases",
           "curvature_shares", "agreement", "summarise", "format_summary", "Comparison", "CLEAN", "compare"]


@dataclass(frozen=True)
class Method:
    """One attack of the comparison: its label on the page, where it comes from, the space it perturbs."""

    label: str
    source: str
    space: str              # "feature" (a layer's activations), "style" (an encoder's statistics), "pixel"
    targeted: bool = True   # aims at the guide's class (success: the guide's class is predicted)
    needs_decoder: bool = False


METHODS: dict[str, Method] = {
    "feature_opt": Method("feature adversary", "Sabour et al. 2016 (ch. 1)", "feature"),
    "lots": Method("LOTS, one step", "Rozsa et al. (ch. 2)", "feature"),
    "lots_iterative": Method("LOTS, iterative", "Rozsa et al. (ch. 2)", "feature"),
    "fgs": Method("FGS (untargeted)", "Rozsa et al.'s baseline (ch. 2)", "pixel", targeted=False),
    "fsa_fa": Method("FSA, augmentation", "feature-space attack (ch. 3)", "style", needs_decoder=True),
    "fsa_fi": Method("FSA, interpolation", "feature-space attack (ch. 3)", "style", needs_decoder=True),
    "deepfool": Method("DeepFool (minimal ℓ2)", "Moosavi-Dezfooli et al.; Jetley et al. (ch. 4)", "pixel"),
    "pgd": Method("PGD (ℓ∞)", "Madry et al.; the baseline of ch. 3", "pixel"),
}


@dataclass(frozen=True)
class PairSet:
    """Source–guide pairs: indices into the pool and the images and labels they select."""

    src: torch.Tensor
    guide: torch.Tensor
    x_src: torch.Tensor
    y_src: torch.Tensor
    x_guide: torch.Tensor
    y_guide: torch.Tensor

    def __len__(self) -> int:
        return len(self.src)

    def subset(self, rows: torch.Tensor | slice) -> "PairSet":
        """The pairs ``rows`` (a slice or indices)."""
        return PairSet(*(t[rows] for t in (self.src, self.guide, self.x_src, self.y_src, self.x_guide, self.y_guide)))


def draw_pairs(model: nn.Module, x_pool: torch.Tensor, y_pool: torch.Tensor, n: int, *, seed: int = 0,
               correct_only: bool = True) -> PairSet:
    """About ``n`` pairs by chapter 1's protocol (:func:`featadv_core.pairs.sample_pairs` with the model's
    predictions and a correctly classified guide), keeping those whose source is classified correctly too.

    ``correct_only=False`` takes the model's predictions as the labels (so every pair is "correctly
    classified" and its two predictions differ): for a network that classifies nothing correctly, such as a
    random-weight stand-in in a preset's smoke run.
    """
    preds = runs.predict(model, x_pool)
    if not correct_only:
        src, guide = pairs.sample_pairs(preds, n, seed=seed)
        return PairSet(src, guide, x_pool[src], preds[src], x_pool[guide], preds[guide])
    src, guide = pairs.sample_pairs(y_pool, n, seed=seed, preds=preds, guide_correct=True)
    keep = preds[src] == y_pool[src]
    if not keep.any():
        raise ValueError(f"none of the {n} sources is classified correctly by the model")
    src, guide = src[keep], guide[keep]
    return PairSet(src, guide, x_pool[src], y_pool[src], x_pool[guide], y_pool[guide])


def run_method(name: str, model: nn.Module, p: PairSet, *, layer: str, settings: Mapping[str, object],
               decoder: nn.Module | None = None, x_pool: torch.Tensor | None = None,
               y_pool: torch.Tensor | None = None, seed: int = 0, cache: bool = True,
               progress: bool = True) -> torch.Tensor:
    """The adversarial images (N×C×H×W in [0, 1], on the CPU) of method ``name`` on the pairs ``p``.

    ``layer`` is the layer Sabour's and LOTS's adversaries match the guide at; ``settings`` the method's
    options (the notebook's parameters: ``delta`` and ``eps`` in /255 units, LOTS's ``eps_max`` in grey
    levels). FSA needs the style ``decoder``; its interpolation draws ``settings["k"]`` prototypes of the
    source's class from ``(x_pool, y_pool)``.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    if METHODS[name].needs_decoder and decoder is None:
        raise ValueError(f"{name} (the feature-space attack) needs a style decoder (decoder=...)")
    s = dict(settings)
    run = dict(cache=cache, progress=progress)
    if name == "feature_opt":
        return runs.run_attack("feature_opt", model, p.x_src, p.x_guide, layer=layer, eps=s["delta"] / 255,
                               steps=s["steps"], solver=s.get("solver", "lbfgsb"), **run)
    if name in ("lots", "lots_iterative", "fgs"):
        search = (dict(iterative=True, max_steps=s["max_steps"]) if name == "lots_iterative" else
                  dict(eps_max=s["eps_max"] / 255, grid_points=s["grid_points"], bisect_steps=s["bisect_steps"]))
        out = (runs.run_detailed(attacks.fgs, model, [p.x_src, p.y_src], **search, **run) if name == "fgs" else
               runs.run_detailed(attacks.lots, model, [p.x_src, p.x_guide], layer=layer, stop="target", **search, **run))
        return out["images"].float() / 255
    if name in ("fsa_fa", "fsa_fi"):
        kind = name[-2:]
        extra = {}
        if kind == "fa":
            extra["eps"] = math.log(s["bound"])
        else:
            if x_pool is None or y_pool is None:
                raise ValueError("FSA's interpolation draws its prototypes from a pool: pass x_pool and y_pool")
            extra["prototypes"] = attacks.class_prototypes(x_pool, y_pool, p.y_src, s["k"],
                                                           generator=torch.Generator().manual_seed(seed))
        out = runs.run_style_attack(kind, model, p.x_src, p.y_src, decoder=decoder, target=p.y_guide,
                                    steps=s["steps"], lr=s["lr"], **extra, **run)
        return out["images"].float()
    if name == "deepfool":
        out = runs.run_deepfool(model, p.x_src, target=p.y_guide, overshoot=s["overshoot"], max_iter=s["max_iter"],
                                box=(0.0, 1.0), **run)
        return (p.x_src + out["perturbation"].to(p.x_src.dtype)).clamp(0, 1)
    out = runs.run_pgd(model, p.x_src, p.y_src, eps=s["eps"] / 255, steps=s["steps"], step_size=s["step"] / 255,
                       target=p.y_guide, seed=seed, **run)
    return out["images"].float()


def method_cost(name: str, model: nn.Module, p: PairSet, **kwargs) -> dict[str, float]:
    """Passes through the victim and seconds per image of one uncached run of ``name`` on ``p``
    (:func:`featadv_core.cost.count_passes`); ``kwargs`` as :func:`run_method`'s."""
    kwargs = dict(kwargs, cache=False, progress=False)
    with count_passes(model) as passes:
        run_method(name, model, p, **kwargs)
    return passes.per_image(len(p))


def success(model: nn.Module, adv: torch.Tensor, p: PairSet) -> dict[str, torch.Tensor]:
    """``{"label", "reached", "changed"}``: the victim's label on each adversary, whether it is the guide's
    class, whether it differs from the source's."""
    label = runs.predict(model, adv)
    return {"label": label, "reached": label == p.y_guide, "changed": label != p.y_src}


def pixel_measures(adv: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"l2", "linf", "ssim", "pass"}`` per image: ℓ2 on the [0, 1] scale, ℓ∞ in /255 units, SSIM
    (scikit-image, chapter 3's) and PASS (Rozsa et al.'s, chapter 2's) against the source."""
    d = metrics.pixel_distances(adv, x)
    return {"l2": d["l2"], "linf": 255 * d["linf"], "ssim": metrics.ssim(adv, x),
            "pass": metrics.pass_score(adv, x)}


def guide_distance_ratios(model: nn.Module, adv: torch.Tensor, p: PairSet, layers: Sequence[str]
                          ) -> dict[str, torch.Tensor]:
    """Chapter 1's ``d(α, g) / d(s, g)`` at every layer of ``layers`` (Fig. 3a, Fig. 5): below 0.5 the
    adversary's features are nearer the guide's than the source's are; 1 is no progress."""
    fa, fs, fg = (runs.batched_features(model, t, layers) for t in (adv, p.x_src, p.x_guide))
    return {layer: metrics.distance_ratio(fa[layer], fs[layer], fg[layer]) for layer in layers}


def embedding_distance(decoder: nn.Module, adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Chapter 3's feature distance: ℓ2 between the channel-normalised style embeddings ``h(x')`` and ``h(x)``
    of the FSA encoder (:func:`featadv_core.metrics.feature_distances`), the yardstick of the paper's Table 3."""
    return metrics.feature_distances(decoder.encoder, adv, x, norm="channel")["l2"]


def naturalness(f_adv: torch.Tensor, label: torch.Tensor, f_pool: torch.Tensor, y_pool: torch.Tensor,
                exclude: torch.Tensor, *, k: int = 3, n_components: int = 5, inlier_quantile: float = 0.05,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """Chapter 1's two views of whether the network finds an adversary natural, at one layer.

    * ``rank``: r₃(α), the percentile of α's mean 3-NN distance among the training points of the class
      the network predicts for it (:func:`~.analysis.neighbour_stats.adversary_nn_ranks`; 50 is a typical
      point, 100 an outlier), ``exclude`` (the guides' rows) left out of its neighbours;
    * ``inlier``: whether α's PPCA log-likelihood ΔL around its nearest class point n₁(α) (§4.2, Fig. 4 bis)
      reaches the ``inlier_quantile`` quantile of ΔL over n₁(α)'s own close neighbours N_c — an adversary
      no less likely than 95 % of real neighbours is an inlier.

    An adversary predicted into a class with at most ``k + 1`` pool points has no rank (NaN in both): a pool
    drawn from an ILSVRC folder need not hold every class an adversary lands in.
    """
    present, counts = torch.unique(y_pool, return_counts=True)
    rows = torch.isin(label.to(y_pool.device), present[counts > k + 1]).nonzero().flatten().cpu()
    out = {name: torch.full((len(label),), float("nan")) for name in ("rank", "inlier")}
    if len(rows):
        ranks = adversary_nn_ranks(f_adv[rows], label[rows], f_pool, y_pool, exclude=exclude[rows], k=k)
        scores = inlier_scores(f_adv[rows], f_pool[ranks.nn1], f_pool, n_components=n_components, generator=seed)
        floor = torch.quantile(scores.delta_L["close"], inlier_quantile, dim=1)
        out["rank"][rows] = ranks.rank_adv.cpu().float()
        out["inlier"][rows] = (scores.delta_L["alpha"] >= floor).cpu().float()
    return out


def curvature_bases(curvatures: Mapping[int, "analysis.Curvatures"], d: int, *, seed: int = 0
                    ) -> dict[str, torch.Tensor]:
    """Chapter 4's two subspaces at equal dimension, over every class: ``"curved"``, the ``d`` most positive
    and ``d`` most negative curvature directions of each class (S_neg∪pos), and ``"flat"``, ``2d`` directions
    of each class's near-null space (S_flat), each the union over classes (:func:`~.analysis.union_basis`)."""
    curved = analysis.union_basis([analysis.select_directions(c, d, "first_and_last") for c in curvatures.values()])
    flat = analysis.union_basis([analysis.select_directions(c, 2 * d, "least", seed=seed) for c in curvatures.values()])
    return {"curved": curved, "flat": flat}


def curvature_shares(perturbation: torch.Tensor, bases: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``‖Qᵀ p‖ / ‖p‖`` of each perturbation in each basis (:func:`~.analysis.norm_fractions`)."""
    return {name: analysis.norm_fractions(perturbation, q).float() for name, q in bases.items()}


def agreement(networks: Mapping[str, nn.Module], adv: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per network, whether it predicts ``labels`` on ``adv`` (a defended model's accuracy with the sources'
    labels; a transfer target's hit with the guides')."""
    return {name: runs.predict(net, adv) == labels for name, net in networks.items()}


def _interval(values: np.ndarray, rate: bool, seed: int) -> Interval | None:
    """A rate's exact binomial interval, or the median's seeded bootstrap interval; ``None`` without enough values."""
    v = values[np.isfinite(values)]
    if rate:
        return rate_interval(v.astype(bool)) if v.size else None
    return bootstrap_interval(v, "median", seed=seed) if v.size >= 2 else None


def summarise(per_image: pd.DataFrame, *, rates: Sequence[str] = (), medians: Sequence[str] = (), by: str = "method",
              seed: int = 0) -> pd.DataFrame:
    """One row per ``by`` group; per column its estimate with a 95 % interval over the group's images (rows).

    ``rates`` are 0/1 columns (a share, exact binomial interval), ``medians`` continuous ones (the median,
    seeded bootstrap); NaN marks an image a measure does not apply to. Returns a frame with a
    ``(column, "value" | "low" | "high" | "n")`` column index (NaN where a group has too few values).
    """
    out = {}
    for group, rows in per_image.groupby(by, sort=False):
        cells = {}
        for col, rate in [(c, True) for c in rates] + [(c, False) for c in medians]:
            values = rows[col].to_numpy(dtype=float)
            iv = _interval(values, rate, seed)
            cells.update({(col, "value"): iv.value if iv else np.nan, (col, "low"): iv.low if iv else np.nan,
                          (col, "high"): iv.high if iv else np.nan, (col, "n"): int(np.isfinite(values).sum())})
        out[group] = cells
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def format_summary(summary: pd.DataFrame, formats: Mapping[str, str]) -> pd.DataFrame:
    """``value [low, high]`` strings for the columns of :func:`summarise`, each with its format (``"{:.0%}"``);
    "—" where a group has no value."""
    out = {}
    for col, fmt in formats.items():
        def cell(r, col=col, fmt=fmt):
            if not np.isfinite(r[(col, "value")]):
                return "—"
            if not np.isfinite(r[(col, "low")]) or r[(col, "low")] == r[(col, "high")] == r[(col, "value")]:
                return fmt.format(r[(col, "value")])
            return f"{fmt.format(r[(col, 'value')])} [{fmt.format(r[(col, 'low')])}, {fmt.format(r[(col, 'high')])}]"
        out[col] = summary.apply(cell, axis=1)
    return pd.DataFrame(out)


@dataclass
class Comparison:
    """The result of :func:`compare`: the pairs, every method's adversaries, one row per (method, pair) with
    every measure (``per_image``; the ``"clean"`` rows measure the sources themselves) and each method's cost."""

    pairs: PairSet
    adversaries: dict[str, torch.Tensor]
    per_image: pd.DataFrame
    cost: pd.DataFrame


CLEAN = "clean"  # the reference rows' method name


def compare(model: nn.Module, x_pool: torch.Tensor, y_pool: torch.Tensor, *, methods: Sequence[str],
            settings: Mapping[str, Mapping], layer: str, ratio_layers: Sequence[str], n_pairs: int,
            decoder: nn.Module | None = None, transfer: Mapping[str, nn.Module] = {},
            defended: Mapping[str, nn.Module] = {}, odds=None, bases: Mapping[str, torch.Tensor] | None = None,
            n_cost: int = 8, pairs: PairSet | None = None, correct_only: bool = True, seed: int = 0,
            progress: bool = True) -> Comparison:
    """Run ``methods`` on one set of pairs drawn from ``(x_pool, y_pool)`` and measure every adversary.

    Measures of an adversary (pixel distances, PASS/SSIM, guide distance ratios at ``ratio_layers``, the FSA
    encoder's embedding distance when ``decoder`` is given, naturalness at ``layer``, curvature shares in
    ``bases`` (:func:`curvature_bases`), O2's flag (``odds``: a :class:`~featadv_core.defenses.CachedOdds`),
    the ``defended`` models' accuracy and the ``transfer`` networks' label change and guide-class hit) are
    taken on the *successful* adversaries only (NaN elsewhere); the ``"clean"`` rows take the same measures on
    the sources where they have a clean value. Cost: an uncached rerun of each method on the first ``n_cost``
    pairs (:func:`method_cost`). ``pairs`` replaces the draw (e.g. the pairs of another comparison that a
    hardened model classifies correctly, for a white-box run on the same images); ``n_pairs`` and
    ``correct_only`` (:func:`draw_pairs`) are then ignored.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; valid: {', '.join(METHODS)}")
    if ratio_layers and layer not in ratio_layers:
        raise ValueError(f"the attacked layer {layer!r} must be one of ratio_layers {list(ratio_layers)}")
    p = draw_pairs(model, x_pool, y_pool, n_pairs, seed=seed, correct_only=correct_only) if pairs is None else pairs
    f_pool = runs.cached_features(model, x_pool, layer, progress=progress)[layer]
    options = dict(layer=layer, decoder=decoder, x_pool=x_pool, y_pool=y_pool, seed=seed)
    adversaries, frames, cost = {}, [], {}
    for name in [CLEAN, *methods]:
        if name == CLEAN:
            adv, label = p.x_src, p.y_src
            ok = torch.ones(len(p), dtype=torch.bool)
            cols = {"success": np.nan, "reached": np.nan, "changed": np.nan}
        else:
            adv = run_method(name, model, p, settings=settings[name], progress=progress, **options)
            adversaries[name] = adv
            hit = success(model, adv, p)
            label = hit["label"]
            ok = hit["reached"] if METHODS[name].targeted else hit["changed"]
            cols = {"success": ok.numpy(), "reached": hit["reached"].numpy(), "changed": hit["changed"].numpy()}
            cost[name] = method_cost(name, model, p.subset(slice(0, n_cost)), settings=settings[name], **options)
        frame = pd.DataFrame({"method": name, "pair": np.arange(len(p)), **cols})
        rows = ok.nonzero().flatten()
        if len(rows):
            a, src = adv[rows], p.x_src[rows]
            measured = {} if name == CLEAN else dict(pixel_measures(a, src))
            if name != CLEAN:
                measured.update({f"ratio {k}": v for k, v in guide_distance_ratios(model, a, p.subset(rows),
                                                                                   ratio_layers).items()})
                if decoder is not None:
                    measured["embedding"] = embedding_distance(decoder, a, src)
                if bases is not None:
                    measured.update(curvature_shares(a - src, bases))
            f_adv = runs.batched_features(model, a, layer)[layer]
            exclude = p.src[rows] if name == CLEAN else p.guide[rows]   # a source is a pool point: not its own neighbour
            measured.update(naturalness(f_adv, label[rows], f_pool, y_pool, exclude, seed=seed))
            if odds is not None:
                measured["o2"] = odds.detect(a)
            measured.update({f"acc {k}": v for k, v in agreement(defended, a, p.y_src[rows]).items()})
            measured.update({f"changed {k}": ~v for k, v in agreement(transfer, a, p.y_src[rows]).items()})
            measured.update({f"reached {k}": v for k, v in agreement(transfer, a, p.y_guide[rows]).items()})
            for col, v in measured.items():
                values = np.full(len(p), np.nan)
                values[rows.numpy()] = torch.as_tensor(v).double().numpy()
                frame[col] = values
        frames.append(frame)
    per_image = pd.concat(frames, ignore_index=True)
    return Comparison(p, adversaries, per_image, pd.DataFrame(cost).T)

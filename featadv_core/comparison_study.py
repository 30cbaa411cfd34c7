"""Chapter 5's study on one dataset: build every piece :func:`~featadv_core.comparison.compare` needs from zoo
ids, run it (and again white-box on a hardened model), and present it as the chapter's tables.

Chapter 5 has one notebook per dataset (CIFAR-10, with ILSVRC as its paper-scale preset, and MNIST) and one that
attacks hardened models white-box on the same pairs; all call these functions, so the protocol, the tables and the
recommendations are written once. Everything is computed
from a :class:`Study`: no number on the page is typed in.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from . import analysis, defenses, models, runs
from .comparison import CLEAN, METHODS, Comparison, compare, curvature_bases, draw_pairs, format_summary, summarise

__all__ = ["LABELS", "Study", "short", "run_study", "run_hardened", "columns", "table", "failures", "PURPOSES",
           "recommendations"]

LABELS = {m: METHODS[m].label for m in METHODS} | {CLEAN: "clean sources"}


@dataclass
class Study:
    """One dataset's comparison and what its tables need: the comparison, the attacked ``layer`` and the
    ``ratio_layers``, chapter 4's subspaces (``bases``, ``None`` when not measured), PGD's ℓ∞ budget (/255),
    the image dimension, the pool the pairs came from, the decoder, each method's settings and the victim.
    :func:`table` fills ``summary``."""

    comp: Comparison
    layer: str
    ratio_layers: list[str]
    bases: dict[str, torch.Tensor] | None
    pgd_eps: float | None
    pool: tuple[torch.Tensor, torch.Tensor]
    decoder: nn.Module | None
    settings: dict[str, dict]
    victim: nn.Module
    summary: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        """Pixels × channels of one image (a random direction's share of a d-dimensional subspace is √(d/dim))."""
        return self.pool[0][0].numel()


def short(model_id: str) -> str:
    """A zoo id without its architecture and dataset suffix, for column names (``madry-resnet20-cifar10`` → ``madry``)."""
    for tail in ("-resnet20-cifar10", "-cifar10", "-imagenet", "lenet-mnist-"):
        model_id = model_id.replace(tail, "")
    return model_id


def _setup(dataset: str, victim: str, decoder: str | None, methods: Sequence[str], settings: Mapping[str, Mapping],
           n_train: int | None, seed: int, device: str):
    """The victim, the pool of ``n_train`` training images, the decoder, and the settings of the methods that can
    run (those needing a decoder are dropped without one)."""
    net = models.get(victim, device=device)
    pool = runs.load_images(dataset, "train", n=n_train, seed=seed)
    dec = models.get(decoder, device=device) if decoder else None
    opts = {m: dict(settings[m]) for m in methods if dec is not None or not METHODS[m].needs_decoder}
    return net, pool, dec, opts


def run_study(dataset: str, *, victim: str, layer: str, ratio_layers: Sequence[str], methods: Sequence[str],
              settings: Mapping[str, Mapping], n_pairs: int, decoder: str | None = None,
              transfer_ids: Sequence[str] = (), defended_ids: Sequence[str] = (),
              odds_layers: Sequence[str] | None = None, n_cal: int = 1000, odds_draws: int = 32,
              curvature: Mapping | None = None, topk: int = 48, curvature_d: int = 24, n_train: int | None = None,
              n_cost: int = 8, correct_only: bool = True, seed: int = 0, device: str = "auto") -> Study:
    """Every method of ``methods`` on one set of pairs of ``dataset`` (a name or an image folder), measured.

    ``victim``, ``decoder``, ``transfer_ids`` and ``defended_ids`` are zoo ids (:func:`featadv_core.models.get`);
    methods that need a decoder are dropped without one. ``odds_layers`` = (φ, W) calibrates O2 on ``n_cal``
    training images (:class:`~featadv_core.defenses.CachedOdds`; ``None``: no O2). ``curvature`` holds Algorithm 1's
    ``method`` and ``n_samples`` (chapter 4's finite-difference step, ``topk`` directions per end), from which
    :func:`~featadv_core.comparison.curvature_bases` keeps ``curvature_d`` per end and class (``None``: not measured).
    The pool is ``n_train`` training images (``None``: all). ``correct_only=False`` drops the protocol's
    correctly-classified requirement (for a random-weight stand-in network, which classifies nothing correctly).
    """
    net, (x_train, y_train), dec, opts = _setup(dataset, victim, decoder, methods, settings, n_train, seed, device)
    odds = None
    if odds_layers is not None:
        x_cal, y_cal = runs.load_images(dataset, "train", n=n_cal, seed=seed)
        odds = defenses.CachedOdds(net, x_cal, y_cal, feature_layer=odds_layers[0], head_layer=odds_layers[1],
                                   draws=odds_draws, seed=seed)
    bases = None
    if curvature is not None:
        h = analysis.fd_step(x_train, cdiff=10.0)  # chapter 4's finite-difference step and Algorithm 1 options
        curv = runs.run_curvatures(net, x_train, y_train.unique().tolist(), h=h, k=topk, seed=seed,
                                   df_overshoot=0.05, df_max_iter=5, stepback=0.8, **curvature)
        bases = curvature_bases(curv, curvature_d, seed=seed)
    comp = compare(net, x_train, y_train, methods=list(opts), settings=opts, layer=layer, ratio_layers=ratio_layers,
                   n_pairs=n_pairs, decoder=dec, transfer={short(i): models.get(i, device=device) for i in transfer_ids},
                   defended={short(i): models.get(i, device=device) for i in defended_ids}, odds=odds, bases=bases,
                   n_cost=n_cost, correct_only=correct_only, seed=seed)
    return Study(comp, layer, list(ratio_layers), bases, opts.get("pgd", {}).get("eps"), (x_train, y_train), dec,
                 opts, net)


def run_hardened(dataset: str, *, victim: str, hardened: str, layer: str, ratio_layers: Sequence[str],
                 methods: Sequence[str], settings: Mapping[str, Mapping], n_pairs: int, decoder: str | None = None,
                 n_train: int | None = None, n_cost: int = 8, correct_only: bool = True, seed: int = 0,
                 device: str = "auto") -> tuple[Study, int, int]:
    """Every method white-box on the hardened model ``hardened`` (a zoo id), on the pairs :func:`run_study` draws
    with the same ``dataset``, ``victim``, ``n_pairs``, ``n_train`` and ``seed`` — the pairs of the undefended
    comparison — that the hardened model classifies correctly, source and guide (with ``correct_only=False`` its
    predictions are the labels and the pairs it predicts apart are kept). Feature methods match its ``layer``;
    transfer is measured back to the undefended ``victim``. Returns the study, the pairs kept and the pairs drawn."""
    net, pool, dec, opts = _setup(dataset, victim, decoder, methods, settings, n_train, seed, device)
    p = draw_pairs(net, *pool, n_pairs, seed=seed, correct_only=correct_only)
    hard = models.get(hardened, device=device)
    pred_src, pred_guide = runs.predict(hard, p.x_src), runs.predict(hard, p.x_guide)
    if correct_only:
        keep = (pred_src == p.y_src) & (pred_guide == p.y_guide)
    else:  # its predictions are the labels (as draw_pairs(correct_only=False)): keep the pairs it predicts apart
        p = dataclasses.replace(p, y_src=pred_src, y_guide=pred_guide)
        keep = pred_src != pred_guide
    if not keep.any():
        raise ValueError(f"{hardened} classifies none of the {len(p)} pairs' sources and guides correctly"
                         if correct_only else f"{hardened} predicts every pair's source and guide alike")
    comp = compare(hard, *pool, methods=list(opts), settings=opts, layer=layer, ratio_layers=ratio_layers, n_pairs=0,
                   pairs=p.subset(keep.nonzero().flatten()), decoder=dec, transfer={short(victim): net}, n_cost=n_cost,
                   seed=seed)
    return (Study(comp, layer, list(ratio_layers), None, opts.get("pgd", {}).get("eps"), pool, dec, opts, hard),
            int(keep.sum()), len(p))


def columns(study: Study) -> dict[str, tuple[str, str, bool]]:
    """Column → (heading, format, is it a rate?) of the study's table, in reading order; only the measures the
    study took."""
    measured = study.comp.per_image
    cols = {"success": ("success", "{:.0%}", True), "changed": ("label changed", "{:.0%}", True),
            "l2": ("ℓ2", "{:.2f}", False), "linf": ("ℓ∞ /255", "{:.0f}", False), "ssim": ("SSIM", "{:.3f}", False),
            "pass": ("PASS", "{:.3f}", False)}
    cols |= {f"ratio {l}": (f"d(α,g)/d(s,g) {l}", "{:.2f}", False) for l in study.ratio_layers}
    if "embedding" in measured:
        cols["embedding"] = ("embedding dist. (FSA encoder)", "{:.1f}", False)
    cols |= {"rank": (f"r₃ in its class ({study.layer})", "{:.0f}", False),
             "inlier": ("manifold inlier", "{:.0%}", True)}
    cols |= {c: (h, "{:.2f}", False) for c, h in (("curved", "share in S_neg∪pos"), ("flat", "share in S_flat"))
             if c in measured}
    if "o2" in measured:
        cols["o2"] = ("O2 flags", "{:.0%}", True)
    for prefix, heading in (("acc ", "accuracy of "), ("changed ", "label changed on "), ("reached ", "guide class on ")):
        cols |= {c: (c.replace(prefix, heading), "{:.0%}", True) for c in measured if c.startswith(prefix)}
    return {c: v for c, v in cols.items() if c in measured}


def table(study: Study, *, seed: int = 0) -> pd.DataFrame:
    """The study's table: every method a row, every measure a column as ``value [low, high]`` (95 % intervals:
    exact binomial for rates, bootstrap for medians; :func:`~featadv_core.comparison.summarise`), then passes and
    seconds per image from the cost run. Stores the numeric summary in ``study.summary``."""
    comp = study.comp
    cols = columns(study)
    study.summary = summarise(comp.per_image, rates=[c for c, v in cols.items() if v[2]],
                              medians=[c for c, v in cols.items() if not v[2]], seed=seed)
    shown = format_summary(study.summary, {c: v[1] for c, v in cols.items()})
    shown.columns = [v[0] for v in cols.values()]
    shown["passes / image (fwd + bwd)"] = (comp.cost["forward"] + comp.cost["backward"]).map("{:.0f}".format)
    shown["seconds / image"] = comp.cost["seconds"].map("{:.2f}".format)
    shown = shown.fillna("—")
    shown.index = [LABELS[m] for m in shown.index]
    return shown


LIKELY = {  # the likely reason a method fails, shown only when a run finds it failing
    "feature_opt": "δ = {delta}/255 is too small to move the source's code to the guide's far enough to change the "
                   "label (chapter 1 reports the same failure on digits, whose thin strokes leave little room at a "
                   "small δ)",
    "fsa_fi": "interpolation keeps the style inside the convex hull of the source class's own prototypes, which "
              "rarely crosses into the guide's class (FSA's paper runs it untargeted)",
}


def failures(study: Study, *, below: float = 0.1) -> str:
    """The methods that succeed on fewer than ``below`` of the pairs, with their success and likely reason, as a
    sentence."""
    comp = study.comp
    by_method = comp.per_image.groupby("method", sort=False)["success"]
    rate, n = by_method.mean(), by_method.size()
    failed = [m for m in comp.adversaries if rate[m] < below]
    if not failed:
        return f"none; every method succeeds on at least {below:.0%} of the pairs"
    return "; ".join(f"{LABELS[m]}, {rate[m]:.0%} of {n[m]} pairs"
                     + (" — likely because " + LIKELY[m].format(**study.settings.get(m, {})) if m in LIKELY else "")
                     for m in failed)


PURPOSES = {  # purpose → (column; None: the guide distance ratio at the attacked layer, higher is better?, format)
    "reach the guide's class most often": ("success", True, "{:.0%}"),
    "smallest pixel change (ℓ2)": ("l2", False, "{:.2f}"),
    "smallest pixel change (ℓ∞ /255)": ("linf", False, "{:.0f}"),
    "least visible (PASS)": ("pass", True, "{:.3f}"),
    "take on the guide's representation (d(α,g)/d(s,g))": (None, False, "{:.2f}"),
    "look natural to the network (r₃)": ("rank", False, "{:.0f}"),
    "curved-subspace share (Jetley)": ("curved", True, "{:.2f}"),
    "evade O2": ("o2", False, "{:.0%}"),
    "fool the defended models (mean accuracy)": ("acc", False, "{:.0%}"),
    "cheapest (passes per image)": ("passes", False, "{:.0f}"),
}


def recommendations(study: Study, *, min_success: float = 0.5) -> dict[str, str]:
    """Per purpose of :data:`PURPOSES`, the targeted method with the best estimate among those that reach the
    guide's class on at least ``min_success`` of the pairs, as ``"label (estimate)"`` (needs :func:`table` first).
    FGS, untargeted, has the easier task and is left out; a purpose no usable method measured is left out."""
    if study.summary is None:
        raise ValueError("call table(study) first: the recommendations are read from its summary")
    s, cost = study.summary, study.comp.cost
    usable = [m for m in s.index if m != CLEAN and METHODS[m].targeted and s.loc[m, ("success", "value")] >= min_success]
    values = {}
    for purpose, (col, higher, fmt) in PURPOSES.items():
        col = col or f"ratio {study.layer}"
        if col == "acc":
            accs = [c for c in s.columns.get_level_values(0).unique() if c.startswith("acc ")]
            est = {m: s.loc[m, [(c, "value") for c in accs]].mean() for m in usable} if accs else {}
        elif col == "passes":
            est = {m: cost.loc[m, "forward"] + cost.loc[m, "backward"] for m in usable}
        else:
            est = {m: s.loc[m, (col, "value")] for m in usable if (col, "value") in s.columns}
        est = {m: v for m, v in est.items() if pd.notna(v)}
        if est:
            best = (max if higher else min)(est, key=est.get)
            values[purpose] = f"{LABELS[best]} ({fmt.format(est[best])})"
    return values

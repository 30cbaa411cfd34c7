"""Chapter 5's claims: what the four papers say about each other's kind of attack, checked on one comparison.

Each claim is judged on a 95 % interval over the attacked pairs (:mod:`featadv_core.analysis.uncertainty`):
medians by a seeded bootstrap, rates by exact binomial intervals, differences between two methods by a
two-sample bootstrap (two methods succeed on different pairs, so their adversaries are not paired; a
difference within one method's adversaries is paired). A claim that needs a method the comparison did not
run (FSA on MNIST: there is no MNIST decoder) is left out, not failed.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .analysis.uncertainty import bootstrap_interval, difference_interval, rate_interval
from .claims import Claim
from .comparison import CLEAN, METHODS, Comparison

__all__ = ["comparison_claims", "whitebox_claims"]

PIXEL = ("pgd", "deepfool", "fgs")
# "A differs from B" needs an interval strictly on one side of 0: two methods that are never flagged give the
# zero-width interval [0, 0], which is no difference.
ABOVE_ZERO, BELOW_ZERO = 1e-12, -1e-12


def _values(comp: Comparison, method: str, column: str) -> np.ndarray:
    """The finite values of ``column`` over ``method``'s rows (none when the comparison did not measure it)."""
    if column not in comp.per_image:
        return np.array([])
    rows = comp.per_image[comp.per_image["method"] == method]
    v = rows[column].to_numpy(dtype=float)
    return v[np.isfinite(v)]


def _has(comp: Comparison, *methods: str, column: str = "success") -> bool:
    """Every method ran (the clean rows always do) and has at least two measured values (an interval needs two)."""
    return all((m == CLEAN or m in comp.adversaries) and _values(comp, m, column).size >= 2 for m in methods)


def _median(comp: Comparison, method: str, column: str) -> float:
    v = _values(comp, method, column)
    return float(np.median(v)) if v.size else float("nan")


def comparison_claims(comp: Comparison, *, layer: str, pgd_eps: float, defended: Mapping[str, str] = {},
                      seed: int = 0) -> list[Claim]:
    """The chapter's claims on ``comp``: ``layer`` is the layer the feature methods target, ``pgd_eps`` PGD's
    ℓ∞ budget in /255, ``defended`` the defended models' columns (``"acc <id>"``) → their names on the page."""
    label = {m: METHODS[m].label for m in METHODS}
    label[CLEAN] = "the clean sources"
    claims: list[Claim] = []
    two = dict(paired=False, seed=seed)

    if _has(comp, "feature_opt", column=f"ratio {layer}"):
        iv = bootstrap_interval(_values(comp, "feature_opt", f"ratio {layer}"), "median", seed=seed)
        claims.append(Claim.judged(
            f"Feature adversaries take on the guide's representation at the targeted layer ({layer})",
            "Sabour et al.: the adversary's code is much closer to the guide's than the source's is (Fig. 3)",
            iv, at_most=0.5, prefix="median d(α, g)/d(s, g): ",
            criterion="the median ratio ≤ 0.5 over the successful pairs (interval wholly below)",
            why_not=f"the L-BFGS-B adversary within its δ bound ends at a median ratio of {iv.value:.2f} at {layer}"))

    pixel = [m for m in PIXEL if _has(comp, m, column="rank")]
    if _has(comp, "feature_opt", column="rank") and pixel:
        ivs = {label[m]: difference_interval(_values(comp, "feature_opt", "rank"), _values(comp, m, "rank"), **two)
               for m in pixel}
        claims.append(Claim.judged_all(
            "Feature adversaries look more natural to the network than pixel-space adversaries",
            "Sabour et al.: the adversaries' codes are ranked like the guide's among its class (Table 1); "
            "label-based adversaries are outliers (§4.2)",
            ivs, at_most=BELOW_ZERO, fmt="{:+.1f}", prefix="median r₃(α), feature adversary − pixel method: ",
            criterion="for every pixel method, the median rank of the feature adversaries in their predicted class "
                      "is lower (interval of the difference wholly below 0)",
            why_not="; ".join(f"{k}: {iv.value:+.1f} percentile points" for k, iv in ivs.items())
                    + f" (feature adversary median {_median(comp, 'feature_opt', 'rank'):.0f})"))

    lots = [m for m in ("lots", "lots_iterative") if _has(comp, m, column="pass")]
    if _has(comp, "fgs", column="pass") and lots:
        ivs = {label[m]: difference_interval(_values(comp, m, "pass"), _values(comp, "fgs", "pass"), **two)
               for m in lots}
        claims.append(Claim.judged_all(
            "LOTS images have a higher PASS than FGS images",
            "Rozsa et al.: LOTS yields adversarial images of higher perceptual similarity (PASS) than FGS (Table 1)",
            ivs, at_least=ABOVE_ZERO, fmt="{:+.3f}", prefix="median PASS, LOTS − FGS: ",
            criterion="for each LOTS variant the median PASS exceeds FGS's (interval of the difference wholly above 0)",
            why_not="; ".join(f"{k}: {iv.value:+.3f}" for k, iv in ivs.items())
                    + f" (FGS median {_median(comp, 'fgs', 'pass'):.3f})"))

    if _has(comp, "fsa_fa", "pgd", column="embedding"):
        linf = bootstrap_interval(_values(comp, "fsa_fa", "linf"), "median", seed=seed)
        emb = difference_interval(_values(comp, "fsa_fa", "embedding"), _values(comp, "pgd", "embedding"), **two)
        parts = [("pixel ℓ∞", Claim.judged("", "", linf, at_least=pgd_eps, fmt="{:.0f}", prefix="median ",
                                           criterion="")),
                 ("embedding distance FSA − PGD", Claim.judged("", "", emb, at_most=BELOW_ZERO, fmt="{:+.1f}",
                                                               prefix="median ", criterion=""))]
        claims.append(Claim.conjoined(
            "Style perturbations have large pixel norms but small feature distances",
            "FSA paper: its examples exceed every ℓp budget (Fig. 1) yet stay closer to the original in the "
            "embedding than ℓp attacks (Tables 3, 5, 6)",
            f"FSA's median pixel ℓ∞ above PGD's budget ({pgd_eps:g}/255) and its median embedding distance (the "
            "FSA encoder's channel-normalised features) below PGD's, each on its interval", parts,
            why_not=f"FSA ℓ∞ median {linf.value:.0f}/255, embedding distance {_median(comp, 'fsa_fa', 'embedding'):.1f} "
                    f"against PGD's {_median(comp, 'pgd', 'embedding'):.1f}"))

    if _has(comp, "deepfool", column="curved"):
        curved, flat = _values(comp, "deepfool", "curved"), _values(comp, "deepfool", "flat")
        iv = difference_interval(curved, flat, "median", paired=True, seed=seed)
        claims.append(Claim.judged(
            "DeepFool's perturbations live in the high-curvature subspace",
            "Jetley et al.: adversarial directions lie along the few directions of high curvature (Fig. 3 bottom)",
            iv, at_least=ABOVE_ZERO, fmt="{:+.3f}", prefix="median share in S_neg∪pos − share in S_flat (same dimension): ",
            criterion="DeepFool's perturbation has more of its norm in the curved subspace than in a flat one of the "
                      "same dimension (paired difference wholly above 0)",
            why_not=f"median shares {np.median(curved):.3f} (curved) and {np.median(flat):.3f} (flat)"))

    others = [m for m in ("fsa_fa", "fsa_fi", "feature_opt", "lots", "lots_iterative") if _has(comp, m, column="o2")]
    if _has(comp, "pgd", column="o2") and others:
        ivs = {label[m]: difference_interval(_values(comp, "pgd", "o2"), _values(comp, m, "o2"), "mean", **two)
               for m in others}
        claims.append(Claim.judged_all(
            "O2 flags PGD's adversaries more often than feature- and style-space ones",
            "FSA paper (Table 1): O2 detects PGD (99.6 %) but not the feature-space attack",
            ivs, at_least=ABOVE_ZERO, fmt="{:+.0%}", prefix="detection rate, PGD − method: ",
            criterion="for every feature/style method, PGD's detection rate at O2's own cutoff is higher "
                      "(two-sample interval of the difference wholly above 0)",
            why_not=f"O2 flags {np.mean(_values(comp, 'pgd', 'o2')):.0%} of PGD's adversaries here; "
                    + ", ".join(f"{k} {np.mean(_values(comp, m, 'o2')):.0%}" for k, m in zip(ivs, others))))

    cols = [c for c in defended if _has(comp, "fsa_fa", "pgd", column=c)]
    if cols:
        ivs = {defended[c]: difference_interval(_values(comp, "fsa_fa", c), _values(comp, "pgd", c), "mean", **two)
               for c in cols}
        claims.append(Claim.judged_all(
            "Style adversaries made on an undefended network transfer to hardened models better than PGD's",
            "FSA paper: hardened models resist ℓp attacks but not the feature-space attack (Table 2; here in transfer)",
            ivs, at_most=BELOW_ZERO, fmt="{:+.0%}", prefix="defended accuracy on FSA − on PGD: ",
            criterion="every defended model is less accurate on FSA's images than on PGD's (interval wholly below 0)",
            why_not="; ".join(f"{k}: {iv.value:+.0%}" for k, iv in ivs.items())))

    if _has(comp, CLEAN, column="o2"):
        iv = rate_interval(_values(comp, CLEAN, "o2").astype(bool))
        claims.append(Claim.judged(
            "O2 rarely flags the clean sources", "Roth et al.: about 1 % false positives at the cutoff",
            iv, at_most=0.05, fmt="{:.0%}", prefix="clean sources flagged: ",
            criterion="O2's false-positive rate on the sources at most 5 % (interval wholly below)", kind="sanity",
            why_not=f"{int(_values(comp, CLEAN, 'o2').sum())} of {iv.n} sources flagged ({iv.value:.0%}): too few sources "
                    f"to put the whole interval below 5 %" if iv.high > 0.05 and iv.value <= 0.05 else
                    f"{iv.value:.0%} of the sources flagged: the calibration images' statistics do not carry over to them"))
    return claims


def whitebox_claims(whitebox: Comparison, *, name: str, seed: int = 0) -> list[Claim]:
    """The chapter's claim on every method run white-box on a hardened model (``name``), on the pairs it classifies
    correctly: the FSA paper's Table 2 — the style attack succeeds where PGD at the model's ε does not (left out when
    FSA did not run)."""
    claims: list[Claim] = []
    if _has(whitebox, "fsa_fa", "pgd"):
        fa, pgd = _values(whitebox, "fsa_fa", "success"), _values(whitebox, "pgd", "success")
        iv = difference_interval(fa, pgd, "mean", paired=True, seed=seed)   # the same pairs: exact on the discordant ones
        claims.append(Claim.judged(
            f"Against a hardened model ({name}, white-box), the style attack succeeds where PGD does not",
            "FSA paper (Table 2): the feature-space attack beats adversarially trained models; PGD at their ε does not",
            iv, at_least=ABOVE_ZERO, fmt="{:+.0%}",
            prefix=f"success FSA {fa.mean():.0%} − PGD {pgd.mean():.0%}: ",
            criterion="FSA's success rate above PGD's on the same pairs (paired exact interval of the difference wholly "
                      "above 0)",
            why_not=f"FSA reaches the guide's class on {fa.mean():.0%} of the pairs and PGD on {pgd.mean():.0%}"))
    if _has(whitebox, "pgd"):
        iv = rate_interval(_values(whitebox, "pgd", "success").astype(bool))
        claims.append(Claim.judged(
            f"The hardened model ({name}) resists targeted PGD at its budget", "Madry et al.: PGD-trained models resist "
            "PGD at the training ε", iv, at_most=0.5, fmt="{:.0%}", prefix="PGD reaches the guide's class: ",
            criterion="targeted PGD succeeds white-box on at most half of the pairs (exact interval wholly below 50 %); "
                      "without it the white-box table compares attacks on a model that is not hardened",
            kind="sanity", why_not=f"PGD reaches the guide's class on {iv.value:.0%} of the pairs: the model is not "
                                   "hardened against it at this budget"))
    return claims

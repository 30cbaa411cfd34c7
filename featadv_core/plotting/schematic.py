"""Schematic diagrams drawn by code (boxes, arrows, step numbers): chapter 3's Fig. 2."""
from __future__ import annotations

__all__ = ["two_phase_diagram"]

_BOXES_TRAIN = [  # (label, x, y, kind)
    ("content image\n$x_p$", 0.02, 0.70, "data"), ("style image $x_q$\n(same class)", 0.02, 0.20, "data"),
    ("encoder $f$\n(fixed)", 0.20, 0.70, "fixed"), ("encoder $f$\n(fixed)", 0.20, 0.20, "fixed"),
    ("AdaIN\n(Eq. 5–6)", 0.40, 0.45, "op"), ("decoder $g$\n(trained)", 0.58, 0.45, "trained"),
    ("reconstruction\n$x_r = g(t)$", 0.76, 0.45, "data"),
]
_BOXES_ATTACK = [
    ("test image $x$", 0.00, 0.45, "data"), ("encoder $f$", 0.18, 0.45, "fixed"),
    ("perturbed style\n$a(f(x))$, Eq. 9/10", 0.40, 0.45, "op"), ("decoder $g$", 0.60, 0.45, "fixed"),
    ("image $g(t)$", 0.76, 0.45, "data"), ("classifier $M$", 0.90, 0.78, "fixed"),
]
_COLOURS = {"data": "#f2f2f2", "fixed": "#d8e6f3", "op": "#fbe3c9", "trained": "#d9f0d3"}


def _box(ax, label, x, y, kind, w=0.15, h=0.2):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y - h / 2), w, h, boxstyle="round,pad=0.01", fc=_COLOURS[kind], ec="0.3", lw=0.8))
    ax.text(x + w / 2, y, label, ha="center", va="center", fontsize=7)
    return (x, y, w)


def _arrow(ax, a, b, label=None, *, w=0.15):
    (xa, ya, wa), (xb, yb, _) = a, b
    ax.annotate("", xy=(xb, yb), xytext=(xa + wa, ya), arrowprops=dict(arrowstyle="->", lw=0.8, color="0.2"))
    if label:
        ax.text((xa + wa + xb) / 2, max(ya, yb) + 0.13, label, ha="center", fontsize=6.5, color="C3",
                fontweight="bold")


def two_phase_diagram():
    """The feature-space attack's two phases (the paper's Fig. 2), step numbers as in the paper.

    (a) decoder training: ① two same-class images through the fixed encoder, ② their embeddings,
    ③ AdaIN, ④ decode, ⑤ re-encode for the content loss (and the style loss on the statistics);
    (b) the attack: the embedding's per-channel statistics ⑦ are the variables, ⑥ the classifier's
    prediction gives the adversarial loss, plus the content loss. Returns the figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8.5, 4.6))
    for ax, title in zip(axes, ["(a) decoder training", "(b) attack"]):
        ax.set_xlim(0, 1.05), ax.set_ylim(0, 1), ax.axis("off")
        ax.set_title(title, loc="left", fontsize=9)
    b = [_box(axes[0], *spec) for spec in _BOXES_TRAIN]
    _arrow(axes[0], b[0], b[2], "①"), _arrow(axes[0], b[1], b[3], "①")
    _arrow(axes[0], b[2], b[4], "② content"), _arrow(axes[0], b[3], b[4], "② style")
    _arrow(axes[0], b[4], b[5], "③ t"), _arrow(axes[0], b[5], b[6], "④")
    axes[0].annotate("⑤ re-encode: content loss ‖f(x_r) − t‖² (Eq. 7) + style loss on μ, σ (Eq. 8)",
                     xy=(0.84, 0.33), xytext=(0.36, 0.05), fontsize=7, color="0.25",
                     arrowprops=dict(arrowstyle="->", lw=0.6, color="0.5", connectionstyle="arc3,rad=-0.2"))
    c = [_box(axes[1], *spec, w=0.13) for spec in _BOXES_ATTACK]
    _arrow(axes[1], c[0], c[1]), _arrow(axes[1], c[1], c[2], "⑦ μ, σ per channel")
    _arrow(axes[1], c[2], c[3], "t"), _arrow(axes[1], c[3], c[4]), _arrow(axes[1], c[4], c[5], "⑥")
    axes[1].text(0.30, 0.08, "loss = content loss ‖f(g(t)) − t‖² + λ · C&W margin of M's logits;  "
                 "Adam on τ (or simplex weights), projected after every step", fontsize=7, color="0.25")
    fig.tight_layout()
    return fig

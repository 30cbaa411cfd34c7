"""``make models``: retrain the zoo's own models and write the checkpoints that ship.

``python -m featadv_core.models.retrain`` retrains every model whose shipped checkpoint is
missing or was made by another recipe (its key differs: a field or its ``version`` changed), so
a checkpoint file changes only when its recipe changes; ``--all`` retrains every one from
scratch; model ids restrict the set. Models that others start from (``Recipe.base``) are
handled first. It also lists the current checkpoints whose training code has changed since they
were trained (:func:`.zoo.code_drift`): bump the recipe's ``version`` if the change alters
training, or ``--restamp`` them (card updated, weights untouched) if it does not.
"""
from __future__ import annotations

import argparse

from . import zoo

__all__ = ["stale", "main"]


def stale() -> list[str]:
    """Our own shipped models whose checkpoint is missing or not of the current recipe."""
    return [model_id for model_id, spec in zoo.ZOO.items()
            if isinstance(spec, zoo.Recipe) and spec.ships and not zoo.shipped_is_current(model_id)]


def _bases_first(ids: list[str]) -> list[str]:
    ordered: list[str] = []

    def visit(model_id: str) -> None:
        base = zoo.ZOO[model_id].base
        if base and base in ids:
            visit(base)
        if model_id not in ordered:
            ordered.append(model_id)

    for model_id in ids:
        visit(model_id)
    return ordered


def _quality(card: dict) -> str:
    """A card's headline numbers: test accuracy (or a decoder's PSNR) and any robust accuracies."""
    quality = (f"test accuracy {card['test_accuracy']:.2%} (float32 {card['test_accuracy_fp32']:.2%})"
               if "test_accuracy" in card else f"PSNR {card['psnr_db']:.2f} dB, accuracy on g(f(x)) "
               f"{card['decoder_accuracy']:.2%} (clean {card['clean_accuracy']:.2%})")
    if "pgd20_accuracy" in card:
        quality += f", PGD-20 {card['pgd20_accuracy']:.2%}"
    if "apgd_ce_t_accuracy" in card:
        quality += f", APGD-CE+T {card['apgd_ce_t_accuracy']:.2%}" + (" (gradient masking)" if card["gradient_masking"] else "")
    return quality


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="model ids (default: all of the zoo's own models)")
    parser.add_argument("--all", action="store_true", help="retrain even current checkpoints")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--restamp", action="store_true",
                        help="record the current code fingerprint in the cards of current checkpoints (no training)")
    parser.add_argument("--evaluate", action="store_true",
                        help="rerun the recipes' evaluations on the current checkpoints and update their cards (no training)")
    args = parser.parse_args(argv)
    own = [k for k, v in zoo.ZOO.items() if isinstance(v, zoo.Recipe) and v.ships]
    unknown = [i for i in args.ids if i not in own]
    if unknown:
        parser.error(f"unknown model ids {unknown}; the zoo's own models are {', '.join(own)}")
    ids = args.ids or own
    if args.restamp:
        for model_id in [i for i in zoo.code_drift() if i in ids]:
            zoo.restamp(model_id)
            print(f"{model_id}: current code fingerprint recorded (checkpoint unchanged)")
        return
    if args.evaluate:
        for model_id in [i for i in ids if zoo.ZOO[i].evaluate is not None and zoo.shipped_is_current(i)]:
            card = zoo.reevaluate(model_id, device=args.device)
            print(f"{model_id}: {_quality(card)} (re-evaluated)", flush=True)
        return
    todo = ids if args.all else [i for i in stale() if i in ids]
    if not todo:
        print("every shipped checkpoint matches its recipe; nothing to do (--all retrains anyway)")
    for model_id in _bases_first(todo):
        card = zoo.train(model_id, device=args.device, out=zoo.shipped_path(model_id))
        zoo.restamp(model_id)  # the code that made it is the reference for later drift warnings
        print(f"{model_id}: {_quality(card)}, {card['train_seconds']:.0f} s on {card['machine']} → {zoo.shipped_path(model_id)}",
              flush=True)
    drift = [i for i in zoo.code_drift() if i in ids]
    if drift:
        print(f"warning: the training code of {', '.join(drift)} changed since their checkpoints were made; "
              "bump the recipe's version if the change alters training, else rerun with --restamp")


if __name__ == "__main__":
    main()

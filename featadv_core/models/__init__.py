"""Model zoo (:mod:`.zoo`), architectures with paper layer names, and training.

``get(model_id)`` returns an eval-mode model taking [0, 1] input; ``model_card(model_id)``
describes it. See :mod:`featadv_core.models.zoo` for the ids.

The package is two layers: the architectures (:mod:`.architectures`, :mod:`.adain`) sit *below*
the attacks, which use them; the zoo and its training recipes (:mod:`.zoo`, :mod:`.train`,
:mod:`.adversarial_training`...) sit *above* them, since adversarial training runs attacks. The
zoo's names are therefore loaded on first use (PEP 562), so that importing an architecture, or
an attack that needs one, does not load the zoo and every trainer.
"""
from __future__ import annotations

import importlib

__all__ = ["ZOO", "Recipe", "WeightsUnavailableError", "available", "checkpoint_path", "get", "model_card", "recipe_key"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".zoo", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Model zoo (:mod:`.zoo`), architectures with paper layer names, and training.

``get(model_id)`` returns an eval-mode model taking [0, 1] input; ``model_card(model_id)``
describes it. See :mod:`featadv_core.models.zoo` for the ids.
"""
from .zoo import ZOO, Recipe, WeightsUnavailableError, available, checkpoint_path, get, model_card, recipe_key

__all__ = ["ZOO", "Recipe", "WeightsUnavailableError", "available", "checkpoint_path", "get", "model_card", "recipe_key"]

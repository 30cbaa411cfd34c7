"""featadv_core: the library behind the featadv reproduction book.

Data (:mod:`.data`), a model zoo with named layers and shipped checkpoints (:mod:`.models`,
:mod:`.features`), attacks (:mod:`.attacks`), metrics (:mod:`.metrics`), analyses
(:mod:`.analysis`), defences (:mod:`.defenses`), cached chunked runs (:mod:`.runs`), reproducibility helpers (:mod:`.repro`),
claims records for the book's dashboard (:mod:`.claims`) and figures (:mod:`.plotting`).
Importing it has no side effects: it seeds nothing, downloads nothing and sets no style.
"""
__version__ = "0.1.0"

"""featadv_core: the library behind the featadv reproduction book.

Data (:mod:`.data`), a model zoo with named layers (:mod:`.models`, :mod:`.features`),
attacks, analyses, reproducibility helpers (:mod:`.repro`) and plotting (:mod:`.plotting`).
Importing it has no side effects: it seeds nothing, downloads nothing and sets no style.
"""
__version__ = "0.1.0"

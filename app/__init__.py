"""TACO demo: text-guided neural image compression (ICML 2024) — models, codecs, metrics, UI.

Importing this package is cheap on purpose: heavy modules (torch, gradio, transformers) load lazily
from the submodules that need them.
"""

__version__ = "0.1.0"

"""Entry point of the TACO demo (also the Hugging Face Space's `app_file`).

Wiring only: the UI is built by `app.ui.layout.build_demo()` from the package; the embedded models
load and code the opening example before the server starts (a few seconds), other models on
first use.

    python app.py                       # http://127.0.0.1:7860
    TACO_MODEL_SET=tiny python app.py   # tiny random models (pipeline check, no weights needed)
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# The decode tab's worker process (app.sandbox, "spawn") re-runs this file as __mp_main__: it
# needs none of the UI.
if __name__ != "__mp_main__":
    from app.fetch import fetch_on_startup  # TACO_FETCH_OFFICIAL=1; logs problems, never raises
    from app.ui.layout import build_demo, launch_kwargs

    fetch_on_startup()

    demo = build_demo(prewarm=True)  # the opening example is computed before the server starts

if __name__ == "__main__":
    demo.launch(**launch_kwargs())

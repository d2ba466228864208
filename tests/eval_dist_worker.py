"""``python -m app eval`` for one torchrun worker, made to die like a killed process.

Used by tests/test_eval_dist.py: the worker whose ``RANK`` equals ``TACO_TEST_DIE_RANK`` ends
with ``os._exit`` (no clean-up, as SIGKILL) before measuring its unit number
``TACO_TEST_DIE_AFTER``, after leaving half a CSV line in its shard file, as a kill in the middle
of a write does. The other ranks run normally until the launcher stops them. MS-SSIM is
replaced by a constant (this worker tests resuming, not metrics).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.eval import cli  # noqa: E402
from app.eval import units as eval_units  # noqa: E402

_real = eval_units.measure_unit
_count = 0


def _dying(plan, unit, pixels, lpips_fn=None):
    global _count
    if os.environ.get("RANK") == os.environ.get("TACO_TEST_DIE_RANK") and \
            _count >= int(os.environ.get("TACO_TEST_DIE_AFTER", "0")):
        out = Path(sys.argv[sys.argv.index("--out") + 1])
        with open(eval_units.shard_path(out, int(os.environ["RANK"])), "a", encoding="utf-8") as fh:
            fh.write(f"{unit.image},{unit.codec},")
        os._exit(9)
    _count += 1
    return _real(plan, unit, pixels, lpips_fn)


eval_units.measure_unit = _dying
# this worker tests resuming, not metrics: a cheap stand-in for MS-SSIM (slow on small images)
import app.metrics  # noqa: E402

app.metrics.ms_ssim = lambda a, b: 1.0

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))

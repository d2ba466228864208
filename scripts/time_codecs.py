"""Compress/decompress wall time at 768x512 (kodim01): trained small models and official-size random models."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import time

import numpy as np
import torch

from app.codec import decompress, load_codec
from app.images import to_rgb_array
from app.models.factory import create_model

img = to_rgb_array("../shared/data/kodak/kodim01.png")
for name in ("elic", "taco"):
    c = load_codec(name); c.compress(img)
    te=[];td=[]
    for _ in range(3):
        t0=time.perf_counter(); d=c.compress(img, caption="a brick building with a red door"); t1=time.perf_counter(); decompress(d); t2=time.perf_counter(); te.append(t1-t0); td.append(t2-t1)
    print(f"{name} (trained small) 768x512: compress {min(te):.2f} s, decompress {min(td):.2f} s, {8*len(d)/(768*512):.3f} bpp")
x = torch.from_numpy(img.astype(np.float32)/255).permute(2,0,1)[None]
for cfg in ("elic-official", "taco-official"):
    torch.manual_seed(0); m = create_model(cfg).eval(); m.update(force=True)
    text = torch.randn(1,38,512) if cfg.startswith("taco") else None
    te=[];td=[]
    with torch.inference_mode():
        for _ in range(2):
            t0=time.perf_counter(); o=m.compress(x, text) if text is not None else m.compress(x); t1=time.perf_counter(); m.decompress(o["strings"], o["shape"]); t2=time.perf_counter(); te.append(t1-t0); td.append(t2-t1)
    print(f"{cfg} (random weights) 768x512: compress {min(te):.2f} s, decompress {min(td):.2f} s, {8*sum(len(s[0]) for s in o['strings'])/(768*512):.2f} bpp")

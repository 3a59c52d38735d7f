"""PTI stage 1 at defaults on the embedded model, in CPU seconds of one thread: a figure that survives a shared
machine better than wall time. Runs on this and older versions of ptiedit, to compare before and after a change:

    git worktree add --detach /tmp/before COMMIT
    for i in 1 2 3; do for src in /tmp/before/src src; do PYTHONPATH=$src python benchmarks/stage1_cpu_time.py $src; done; done
"""
import statistics
import sys
import time

import torch

import ptiedit
from ptiedit.toyworld.render import render
from ptiedit.toyworld.scene import Obj, Scene

torch.set_num_threads(1)
options = {"device": "cpu"} if "device" in ptiedit.load_pipeline.__code__.co_varnames else {}  # older versions
pipe = ptiedit.load_pipeline(None, **options)
image = render(Scene("white", (Obj("circle", "red", "big", "center"),))).resize((64, 64))
ptiedit.invert(pipe, image, steps=10, progress=False)  # warm-up
cpu, wall = [], []
for _ in range(3):
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    inversion = ptiedit.invert(pipe, image, steps=50, progress=False)
    cpu.append(time.process_time() - start_cpu)
    wall.append(time.perf_counter() - start_wall)
iterations = inversion.stats["iterations"]
print(sys.argv[1] if len(sys.argv) > 1 else ptiedit.__file__, "cpu_s", " ".join(f"{t:.2f}" for t in cpu),
      "median", f"{statistics.median(cpu):.2f}", "wall_median", f"{statistics.median(wall):.2f}",
      "adam_updates", sum(iterations) if isinstance(iterations, list) else iterations,
      "unet_calls", inversion.stats.get("unet_calls"))

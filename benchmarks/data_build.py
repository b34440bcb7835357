"""Data build time by GT PNG compression level and parallelism (see docs/benchmarks.md).

Run: python benchmarks/data_build.py 64
"""
import os, shutil, sys, tempfile, time
from pathlib import Path
os.environ["GENEVOLVE_OFFLINE"] = "1"
os.environ["GENEVOLVE_HOME"] = tempfile.mkdtemp(prefix="gvh_")
from genevolve.config import Settings
import genevolve.data.pipeline as P
N = int(sys.argv[1])
root = Path(tempfile.mkdtemp(prefix="databench_"))
settings = Settings(offline=True, extra={"library_embeddings": False}, runs_dir=str(root / "runs"))
P.build_dataset(root / "warm", P.BuildConfig(recipes=N, parallel=1, offline=True), settings=settings)
for rep in range(2):
    for level, parallel in ((6, 1), (1, 1), (1, 2)):
        P.GT_PNG_COMPRESS_LEVEL = level
        out = root / f"b_{rep}_{level}_{parallel}"
        t0 = time.perf_counter()
        m = P.build_dataset(out, P.BuildConfig(recipes=N, parallel=parallel, offline=True), settings=settings)
        size = sum(f.stat().st_size for f in (out / "gt").iterdir())
        print(rep, level, parallel, round(time.perf_counter() - t0, 2), m["stage_seconds"]["gt"], size // 1024,
              m["counts"]["kept"], flush=True)
shutil.rmtree(root)

"""The latent-space figure: seconds to embed the 10,000 test encodings in 2-D, and whether the picture holds.

Compares sklearn's t-SNE as the report calls it (random init, 1000 iterations) with the settings
vaelab uses (PCA init, fewer iterations), on the posterior means of a trained run. "Equivalent
picture" is measured, not eyeballed: 10-NN digit accuracy inside the 2-D map (how well classes
separate) and sklearn's trustworthiness (how well local neighbourhoods survive), on the same points.

Usage: python benchmarks/bench_tsne.py RUN [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.manifold import TSNE, trustworthiness
from sklearn.neighbors import KNeighborsClassifier

from vaelab.data.images import load
from vaelab.vae.figures import TSNE_SETTINGS, mu_of
from vaelab.vae.run import open_vae

VARIANTS = {
    "report: sklearn, random init, 1000 iterations": dict(init="random", max_iter=1000),
    "vaelab: sklearn, PCA init, " + str(TSNE_SETTINGS["max_iter"]) + " iterations": TSNE_SETTINGS,
}


def knn_in_map(points: np.ndarray, y: np.ndarray) -> float:
    """10-NN accuracy of the digit label inside the 2-D map (fit on half, score on the other half)."""
    half = len(points) // 2
    return KNeighborsClassifier(10).fit(points[:half], y[:half]).score(points[half:], y[half:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    run = open_vae(args.run, "cpu")
    mnist = load()
    mu, y = mu_of(run, mnist.test_x), mnist.test_y.numpy()
    rows = []
    for name, kw in VARIANTS.items():
        t0 = time.perf_counter()
        points = TSNE(2, learning_rate="auto", random_state=0, n_jobs=-1, **kw).fit_transform(mu)
        seconds = time.perf_counter() - t0
        sub = slice(0, 3000)  # trustworthiness is O(n^2): a fixed subset of the same points
        rows.append({"method": name, "seconds": round(seconds, 1), "knn10_in_map": round(knn_in_map(points, y), 4),
                     "trustworthiness": round(float(trustworthiness(mu[sub], points[sub], n_neighbors=10)), 4)})
        print(rows[-1])
    rows.append({"method": "(reference) 10-NN accuracy in the latent space itself",
                 "knn10_in_map": round(knn_in_map(mu, y), 4)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tsne.json").write_text(json.dumps({"run": args.run, "points": len(mu), "rows": rows}, indent=2) + "\n")
    lines = ["| method | seconds | 10-NN accuracy in the map | trustworthiness (10) |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r.get('seconds', '-')} | {r['knn10_in_map']} | {r.get('trustworthiness', '-')} |"
              for r in rows]
    (out / "tsne.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

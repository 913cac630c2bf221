"""Training throughput: vaelab's trainer against the report's loop, and the achieved share of matmul peak.

The reference is the loop as the report writes it: a DataLoader over a per-sample Dataset that turns
each uint8 image into a float tensor, `.to(device)` per batch, the default Adam, the sigmoid + BCE
loss summed over the batch, and `loss.item()` every step. vaelab's side is `engine.loop.train_epoch`, the
exact inner loop of `vaelab train`. Both train the same architecture, side by side in one process;
each figure is the median of several repetitions.

Usage: python benchmarks/bench_train.py [--steps 60] [--repeats 5] [--threads N] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from vaelab.vae.config import VAETrainConfig
from vaelab.vae.networks import build_vae
from vaelab.engine.steps import graphs_wanted, make_optimizer, step_function
from vaelab.engine.loop import train_epoch
from vaelab.vae.train import vae_compute

MODELS = {"dense 256-512 z5": ("dense", "256-512", 5), "conv 32-64-128 z10": ("conv", "32-64-128", 10)}


class PerSample(Dataset):
    """What torchvision's MNIST + ToTensor does: one uint8 image -> one float tensor, per sample."""

    def __init__(self, x_u8, y):
        self.x, self.y = x_u8, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i].float().div(255.0), self.y[i]


def report_loop(model, x_u8, y, bs, steps, device):
    """The report's train_vae inner loop for `steps` batches; returns seconds."""
    loader = DataLoader(PerSample(x_u8, y), batch_size=bs, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    t0 = time.perf_counter()
    total = 0.0
    for i, (x, _) in enumerate(loader):
        if i == steps:
            break
        x = x.to(device)
        opt.zero_grad()
        out = model(x)
        recon = F.binary_cross_entropy(out.x_hat, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + out.logvar - out.mu.pow(2) - out.logvar.exp())
        loss = recon + kl
        loss.backward()
        opt.step()
        total += loss.item()
    return time.perf_counter() - t0


def loading_only(x_u8, y, bs, steps, device):
    """The report loop's data path alone (DataLoader over PerSample, `.to(device)`) for `steps` batches:
    what vaelab removes by keeping uint8 MNIST on the device; returns seconds."""
    loader = DataLoader(PerSample(x_u8, y), batch_size=bs, shuffle=True)
    t0 = time.perf_counter()
    for i, (x, _) in enumerate(loader):
        if i == steps:
            break
        x = x.to(device)
    return time.perf_counter() - t0


def vaelab_loop(model, x_u8, bs, steps, device, precision="fp32", graphs=None):
    """vaelab's inner loop (engine.loop.train_epoch, the step as `vaelab train` builds it, CUDA graph included)
    over `steps` batches: a function returning seconds. The step is built once, as in a training run."""
    opt = make_optimizer(model.parameters(), 1e-3, capturable=graphs_wanted(device))
    tc = VAETrainConfig(batch_size=bs, precision=precision)
    x_dev = x_u8[: steps * bs].to(device)
    perm = torch.randperm(len(x_dev)).to(device)
    step = step_function(vae_compute(model, x_dev, tc), opt, device, bs, graphs)

    def run() -> float:
        model.train()
        t0 = time.perf_counter()
        per_step = train_epoch(step, perm, bs, range(steps))
        float(per_step[-1, 0])  # wait for the device
        return time.perf_counter() - t0
    return run


def step_flops(family, arch, latent, bs) -> int:
    """FLOPs of one training step (forward + backward), counted by PyTorch's FlopCounterMode."""
    model = build_vae(family, arch, latent)
    x = torch.rand(bs, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        loss = F.binary_cross_entropy_with_logits(out.logits, x, reduction="sum") + out.mu.sum()
        loss.backward()
    return counter.get_total_flops()


def matmul_peak(repeats=5, n=2048, device=torch.device("cpu")) -> float:
    """Measured float32 matrix-multiply rate (FLOP/s), the best of several n x n products."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(4):
            c = torch.mm(a, b)
        float(c[0, 0])  # wait for the device
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def median_rates(fns, repeats, images):
    """Median images per second of each fn (which returns seconds), the calls interleaved A B A B ...
    so that a slow patch of a noisy machine hits every contender alike."""
    for fn in fns:
        fn()  # warm-up (allocator, kernels, Adam state)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            t.append(fn())
    return [statistics.median(images / s for s in t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU script passes cuda)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    n = args.steps * 512
    x_u8 = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (n,))
    peak = matmul_peak(n=4096 if device.type == "cuda" else 2048, device=device)  # a GPU needs bigger
    rows = []
    for label, (family, arch, latent) in MODELS.items():
        for bs, compare in ((128, True), (512, False)):
            model = build_vae(family, arch, latent).to(device)
            fns = {"ours": vaelab_loop(model, x_u8, bs, args.steps, device)}
            if compare:
                fns["ref"] = lambda: report_loop(model, x_u8, y, bs, args.steps, device)
                fns["load"] = lambda: loading_only(x_u8, y, bs, args.steps, device)
                fns["bf16"] = vaelab_loop(model, x_u8, bs, args.steps, device, "bf16")
                if device.type == "cuda":  # what the CUDA graph buys: the same step launched op by op
                    fns["eager"] = vaelab_loop(model, x_u8, bs, args.steps, device, graphs=False)
            rate = dict(zip(fns, median_rates(list(fns.values()), args.repeats, bs * args.steps)))
            ours, ref, bf16, eager = rate["ours"], rate.get("ref"), rate.get("bf16"), rate.get("eager")
            # the report loop's speed-up if only its data path were removed: ref time / (ref time - loading)
            loading_bound = ref and round((1 / ref) / (1 / ref - 1 / rate["load"]), 2)
            flops = step_flops(family, arch, latent, bs)
            achieved = flops * ours / bs
            rows.append({"model": label, "batch": bs, "vaelab_img_s": round(ours), "report_img_s": ref and round(ref),
                         "speedup": ref and round(ours / ref, 2), "vaelab_bf16_img_s": bf16 and round(bf16),
                         "speedup_bf16": ref and round(bf16 / ref, 2), "gflop_per_step": round(flops / 1e9, 3),
                         "achieved_gflops": round(achieved / 1e9, 1), "peak_gflops": round(peak / 1e9, 1),
                         "fraction_of_peak": round(achieved / peak, 3), "loading_ms_per_batch":
                         ref and round(1000 * bs / rate["load"], 2), "speedup_from_loading_alone": loading_bound,
                         **({"vaelab_eager_img_s": round(eager), "graph_speedup": round(ours / eager, 2)}
                            if eager else {})})
            print(rows[-1], file=sys.stderr)
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__, "steps": args.steps,
            "repeats": args.repeats, "device": str(device)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["| model | batch | vaelab img/s | report loop img/s | speed-up | vaelab --precision bf16 img/s | "
             "speed-up bf16 | GFLOP/step | achieved GFLOP/s (fp32) | matmul peak GFLOP/s (fp32) | share of peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['vaelab_img_s']} | {r['report_img_s'] or '-'} | "
                     f"{r['speedup'] or '-'} | {r['vaelab_bf16_img_s'] or '-'} | {r['speedup_bf16'] or '-'} | "
                     f"{r['gflop_per_step']} | {r['achieved_gflops']} | "
                     f"{r['peak_gflops']} | {r['fraction_of_peak']:.0%} |")
    lines += ["", "| model | report loop ms/step | of which loading (DataLoader + .to) | speed-up if only the loading "
              "went | vaelab speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {1000 * r['batch'] / r['report_img_s']:.2f} | {r['loading_ms_per_batch']} | "
              f"{r['speedup_from_loading_alone']} | {r['speedup']} |" for r in rows if r["report_img_s"]]
    if device.type == "cuda":
        lines += ["", "| model | batch | CUDA graph img/s | eager (op by op) img/s | graph speed-up |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['vaelab_img_s']} | {r['vaelab_eager_img_s']} | "
                  f"{r['graph_speedup']} |" for r in rows if "graph_speedup" in r]
    (out / "train.md").write_text(f"{meta}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Time the HE loss (forward + backward) against batch-hard triplet, with and without a key dictionary, and put it
next to one training step of a trunk, to show whether the loss matters in the step time.

    python benchmarks/he_loss_speed.py                       # paper scale: B 64 (4 x 16), D 2048, 8192 keys
    python benchmarks/he_loss_speed.py --trunk resnet50_ibn_a --trunk-size 256 --trunk-batch 64
"""
from __future__ import annotations

import argparse
import platform
import time

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_round_robin(fns: dict[str, object], repeats: int, warmup: int = 2) -> list[tuple[str, float, float]]:
    """(name, min ms, median ms) of each fn, run in turns so that load from other processes hits all alike;
    on a shared machine the minimum is the closest to the cost on idle cores."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            _sync()
            t0 = time.perf_counter()
            fn()
            _sync()
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - t0))
    return [(name, min(t), sorted(t)[len(t) // 2]) for name, t in times.items()]


def loss_rows(args, device: torch.device) -> list[tuple[str, float, float]]:
    from vreid.losses import TripletLoss
    from vreid.losses.hard_elastic import HardElasticLoss

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(args.ids).repeat_interleave(args.k).to(device)
    feats = torch.randn(args.ids * args.k, args.dim, generator=g).to(device)
    memory = torch.randn(args.dict, args.dim, generator=g).to(device)
    memory_labels = torch.randint(0, 4 * args.ids, (args.dict,), generator=g).to(device)

    def step(loss_fn, *extra):
        def run():
            x = feats.clone().requires_grad_()
            loss_fn(x, labels, *extra).backward()
        return run

    triplet, he = TripletLoss(margin=0.3), HardElasticLoss()
    one_pair = HardElasticLoss(margin=0.3, max_pairs=1)
    return timed_round_robin({
        "batch-hard triplet, batch only": step(triplet),
        "HE, batch only": step(he),
        f"batch-hard triplet (HE, 1 pair), batch + {args.dict} keys": step(one_pair, memory, memory_labels),
        f"HE, batch + {args.dict} keys": step(he, memory, memory_labels),
    }, args.repeats)


def trunk_row(args, device: torch.device) -> tuple[str, float, float]:
    from vreid.methods import DataInfo, build_method
    from vreid.methods.bot import BackboneConfig
    from vreid.methods.sbs import SbsConfig

    non_local = [0, 2, 3, 0] if args.trunk.startswith(("resnet50", "resnet101")) else [0, 1, 1, 0]
    cfg = SbsConfig(backbone=BackboneConfig(name=args.trunk), non_local=non_local)
    method = build_method(cfg, DataInfo(num_classes=500, height=args.trunk_size, width=args.trunk_size)).to(device)
    optim = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    ids = args.trunk_batch // args.k
    batch = {"images": torch.randn(ids * args.k, 3, args.trunk_size, args.trunk_size, device=device),
             "labels": torch.arange(ids, device=device).repeat_interleave(args.k)}

    def run():
        out = method(batch)
        optim.zero_grad()
        sum(method.losses(out, batch).values()).backward()
        optim.step()

    name = f"one SBS training step: {args.trunk} + non-local, {ids * args.k} images of {args.trunk_size}px"
    return timed_round_robin({name: run}, args.trunk_repeats, warmup=1)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=4, help="identities per batch (P)")
    parser.add_argument("--k", type=int, default=16, help="images per identity (K)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--dict", type=int, default=8192, help="dictionary size")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--trunk", default="resnet18_ibn_a", help="backbone of the reference step ('' = none)")
    parser.add_argument("--trunk-size", type=int, default=96)
    parser.add_argument("--trunk-batch", type=int, default=32)
    parser.add_argument("--trunk-repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    rows = loss_rows(args, device)
    if args.trunk:
        rows.append(trunk_row(args, device))
    print(f"device {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}; batch {args.ids} x {args.k}, feature dim {args.dim}; {args.repeats} repeats\n")
    print("| what (forward + backward) | min ms | median ms |\n| --- | ---: | ---: |")
    for name, best, median in rows:
        print(f"| {name} | {best:.2f} | {median:.2f} |")


if __name__ == "__main__":
    main()

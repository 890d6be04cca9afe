"""Benchmark: one DCAC training step vs the paper's CLIP-ReID baseline (same encoder, no diffusion branch).

The step is the one of ``DCACEngine.forward_backward``: forward in train mode, ID loss (CE with label
smoothing 0.1) + PCL (prototype memory built once from random features; its update runs in
``backward``) + denoising loss, ``zero_grad`` / ``backward`` / Adam over
``model.param_groups(lr, 1.0, weight_decay=1e-4)``, and the engine's ``.item()`` reads.

Rows (each measured in its own fresh ``spawn`` subprocess so peak memory does not mix; every child
draws the same inputs from the same seed):

* ``baseline fp32``   — ``clip_reid_*``.
* ``DCAC fp32``       — ``dcac_*`` with the VAE view ``x_vae``.
* ``DCAC fp32 + cached VAE moments`` — ``model.diffusion.encode_moments(x_vae)`` once (outside the
  timed loop), then ``vae_moments=`` instead of ``x_vae`` (the cache option: no VAE encoder per step).
* ``DCAC bf16 autocast`` — ``torch.autocast(device_type, dtype=torch.bfloat16)`` as ``train.amp bf16``.
* ``DCAC fp32 + grad checkpointing`` — builder kwarg ``grad_checkpointing=True`` (ViT blocks and UNet).
* ``DCAC fp32, 2 ranks`` — two CPU processes (gloo), DDP over the trainable parameters, each with half
  of the same global batch and ``threads // 2`` threads; the BNNeck uses global-batch statistics and
  the memory update is all-gathered, as in training. Images/s counts the global batch.

Configs: tiny (``dcac_tiny`` / ``clip_reid_tiny``, input 128x64, VAE view 64x64, N=751, batch 32) on
CPU; real (``dcac_vit_b16`` / ``clip_reid_vit_b16``, 256x128, VAE view 128x128, N=751, LoRA rank 8,
batch 64, random weights) when CUDA is available or with ``--real``. Reported: median step time over
``--steps`` timed steps after ``--warmup`` steps, images/s, peak memory (CUDA:
``torch.cuda.max_memory_allocated`` after a reset post-build; CPU: peak-RSS increase of the child —
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the steps minus its value once model, optimiser,
memory and inputs exist, with the kernel's high-water mark reset via ``/proc/self/clear_refs`` first
where allowed) and the ratios to the baseline row.

    python benchmarks/bench_train_step.py                                   # tiny, CPU, 2 threads
    python benchmarks/bench_train_step.py --real --batch-size 2 --steps 2 --warmup 1 --rows base,dcac
    python benchmarks/bench_train_step.py --device cuda                     # tiny + real on the GPU
    python benchmarks/bench_train_step.py --markdown docs/bench_train_step_run.md
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

NUM_CLASSES = 751
LR = 5e-6

CONFIGS = {
    "tiny": dict(
        base="clip_reid_tiny",
        dcac="dcac_tiny",
        image_size=(128, 64),
        vae_size=64,
        batch=32,
        warmup=2,
        steps=10,
    ),
    "real": dict(
        base="clip_reid_vit_b16",
        dcac="dcac_vit_b16",
        image_size=(256, 128),
        vae_size=128,
        batch=64,
        warmup=2,
        steps=10,
    ),
}


@dataclass(frozen=True)
class Row:
    """One measured option."""

    key: str
    label: str
    dcac: bool
    amp: str = "off"  # 'off' | 'bf16'
    cache_moments: bool = False
    grad_ckpt: bool = False
    ranks: int = 1  # > 1: DDP over that many CPU processes (gloo), the batch split between them


ROWS = [
    Row("base", "baseline (CLIP-ReID) fp32", dcac=False),
    Row("dcac", "DCAC fp32", dcac=True),
    Row("cache", "DCAC fp32 + cached VAE moments", dcac=True, cache_moments=True),
    Row("bf16", "DCAC bf16 autocast", dcac=True, amp="bf16"),
    Row("ckpt", "DCAC fp32 + grad checkpointing", dcac=True, grad_ckpt=True),
    Row("base_bf16", "baseline (CLIP-ReID) bf16 autocast", dcac=False, amp="bf16"),
    Row("ddp2", "DCAC fp32, 2 ranks (DDP, gloo; batch split)", dcac=True, ranks=2),
]
DEFAULT_ROWS = "base,dcac,cache,bf16,ckpt,ddp2"


def _reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs`` 5); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0  # bytes on macOS, KiB on Linux


def measure(
    cfg_name: str, row: Row, device_str: str, batch: int, warmup: int, steps: int, threads: int
) -> dict:
    """Build the model of ``row``, run ``warmup + steps`` training steps, return timings and memory.

    Runs inside a fresh subprocess (see :func:`_child`).
    """
    import torch
    import torch.nn.functional as F

    from dcac_plugin import distributed as dist_utils
    from dcac_plugin.engine.memory import PrototypeMemory
    from dcac_plugin.models import build_model

    world, rank = dist_utils.world_size(), dist_utils.rank()
    torch.set_num_threads(max(1, threads // world))
    device = torch.device(device_str)
    cfg = CONFIGS[cfg_name]
    torch.manual_seed(0)
    kwargs = {"image_size": cfg["image_size"]}
    if row.dcac:
        kwargs.update(vae_image_size=cfg["vae_size"], lora_rank=8)
    if row.grad_ckpt:
        kwargs["grad_checkpointing"] = True
    t0 = time.perf_counter()
    model = build_model(cfg["dcac"] if row.dcac else cfg["base"], NUM_CLASSES, **kwargs)
    if world > 1:
        dist_utils.convert_bnneck(model)
    model = model.to(device).train()
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.Adam(model.param_groups(LR, 1.0, weight_decay=1e-4))
    memory = PrototypeMemory(NUM_CLASSES, dim=model.feat_dim).to(device)
    cond = getattr(model, "condition", None)
    needs_memory = cond is not None and cond.prob_type in ("pcl", "fc+pcl")

    g = torch.Generator().manual_seed(1)  # same inputs in every child
    memory.build(
        torch.randn(2 * NUM_CLASSES, model.feat_dim, generator=g).to(device),
        torch.arange(NUM_CLASSES).repeat(2).to(device),
    )
    h, w = cfg["image_size"]
    s = cfg["vae_size"]
    x = torch.randn(batch, 3, h, w, generator=g).to(device)
    x_vae = (torch.rand(batch, 3, s, s, generator=g) * 2 - 1).to(device)
    pids = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    fwd = model
    if world > 1:  # this rank's half of the same global batch, DDP over the trainable parameters
        from torch.nn.parallel import DistributedDataParallel

        part = slice(rank * batch // world, (rank + 1) * batch // world)
        x, x_vae, pids = x[part], x_vae[part], pids[part]
        fwd = DistributedDataParallel(model)
    moments = model.diffusion.encode_moments(x_vae) if (row.dcac and row.cache_moments) else None

    def step() -> dict[str, float]:
        mem = memory.snapshot() if needs_memory else None
        amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if row.amp == "bf16" else None
        with amp if amp is not None else nullcontext():
            if not row.dcac:
                out = fwd(x, labels=pids, memory=mem)
            elif moments is not None:
                out = fwd(x, vae_moments=moments, labels=pids, memory=mem)
            else:
                out = fwd(x, x_vae=x_vae, labels=pids, memory=mem)
            logits = out["logits"].float()
            loss_id = F.cross_entropy(logits, pids, label_smoothing=0.1)
            loss_pcl = memory.loss(out["z"].float(), pids)
            loss_ldm = out["loss_ldm"].float() if row.dcac else logits.new_zeros(())
            loss = loss_id + loss_pcl + loss_ldm
        terms = {"loss_id": loss_id.item(), "loss_pcl": loss_pcl.item(), "loss_ldm": loss_ldm.item()}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        acc = (logits.argmax(1) == pids).float().mean().item() * 100
        return {"loss": loss.item(), **terms, "acc": acc}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    reset_ok = False
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        mem0 = torch.cuda.memory_allocated(device) / 2**20
    else:
        reset_ok = _reset_rss_peak()
        mem0 = _maxrss_mib()
    times, last = [], {}
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        last = step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = _maxrss_mib()
    med = statistics.median(times)
    return {
        **asdict(row),
        "config": cfg_name,
        "device": device_str,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "threads": threads,
        "build_s": build_s,
        "params": n_params,
        "trainable": n_train,
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "img_per_s": batch / med,
        "mem_before_mib": mem0,
        "peak_mib": peak,
        "peak_delta_mib": peak - mem0,
        "rss_peak_reset": reset_ok,
        "last": last,
    }


def _child(q, rank: int, world: int, port: int, *args) -> None:
    logging.basicConfig(level=logging.ERROR)  # silence the random-init warnings in the table output
    try:
        if world > 1:
            import torch.distributed as dist

            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            dist.init_process_group("gloo", rank=rank, world_size=world)
        result = measure(*args)
        if rank == 0:
            q.put(("ok", result))
        if world > 1:
            dist.destroy_process_group()
    except BaseException as e:  # noqa: BLE001 — reported by the parent
        import traceback

        q.put(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def run_row(*args) -> dict:
    """Run :func:`measure` in fresh ``spawn`` subprocesses (one per rank); raise RuntimeError on failure.

    With several ranks the reported step time and peak memory are rank 0's; images/s counts the
    global batch.
    """
    import socket

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    world = args[1].ranks
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [ctx.Process(target=_child, args=(q, r, world, port, *args)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        status, payload = q.get()
    finally:
        for p in procs:
            p.join()
    if status != "ok":
        raise RuntimeError(f"benchmark child for {args[:2]} failed:\n{payload}")
    return payload


def table(results: list[dict], mem_label: str) -> str:
    """Markdown table; ratios relative to the first fp32 baseline row of the same config."""
    lines = [
        f"| config | option | batch | median step (s) | min step (s) | images/s | {mem_label} (MiB) | "
        f"time x base | mem x base | loss (last step) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        base = next((b for b in results if b["config"] == r["config"] and b["key"] == "base"), None)
        tx = f"{r['median_s'] / base['median_s']:.2f}" if base else "-"
        mx = (
            f"{r['peak_delta_mib'] / base['peak_delta_mib']:.2f}"
            if base and base["peak_delta_mib"] > 0
            else "-"
        )
        last = r["last"]
        loss = f"id {last['loss_id']:.3f} / pcl {last['loss_pcl']:.3f} / ldm {last['loss_ldm']:.3f}"
        lines.append(
            f"| {r['config']} | {r['label']} | {r['batch']} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
            f"{r['img_per_s']:.1f} | "
            f"{r['peak_delta_mib']:.0f} | {tx} | {mx} | {loss} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=None, help="default 32 (tiny) / 64 (real)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    ap.add_argument("--real", action="store_true", help="only the real config, even on CPU (slow)")
    ap.add_argument("--tiny-only", action="store_true", help="skip the real config on CUDA")
    ap.add_argument(
        "--rows",
        default=DEFAULT_ROWS,
        help=f"comma list of {','.join(r.key for r in ROWS)} (default {DEFAULT_ROWS})",
    )
    ap.add_argument("--markdown", default=None, help="also write the table (and the command) to this file")
    args = ap.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False; use --device cpu")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if use_cuda else "cpu"
    if args.real:
        configs = ["real"]
    elif device == "cuda" and not args.tiny_only:
        configs = ["tiny", "real"]
    else:
        configs = ["tiny"]
    by_key = {r.key: r for r in ROWS}
    keys = [k.strip() for k in args.rows.split(",") if k.strip()]
    bad = [k for k in keys if k not in by_key]
    if bad:
        raise SystemExit(f"unknown --rows {bad}; choose from {list(by_key)}")
    if not keys:
        raise SystemExit("--rows is empty")
    for v, name in ((args.batch_size, "--batch-size"), (args.steps, "--steps"), (args.threads, "--threads")):
        if v is not None and v < 1:
            raise SystemExit(f"{name} must be >= 1, got {v}")

    results = []
    for cfg_name in configs:
        cfg = CONFIGS[cfg_name]
        batch = args.batch_size or cfg["batch"]
        warmup = cfg["warmup"] if args.warmup is None else args.warmup
        steps = args.steps or cfg["steps"]
        for k in keys:
            row = by_key[k]
            t0 = time.perf_counter()
            r = run_row(cfg_name, row, device, batch, warmup, steps, args.threads)
            print(
                f"[{cfg_name}] {row.label}: median {r['median_s']:.3f} s/step, {r['img_per_s']:.1f} img/s, "
                f"peak +{r['peak_delta_mib']:.0f} MiB (build {r['build_s']:.1f} s, "
                f"{r['trainable']:,}/{r['params']:,} trainable params, "
                f"child {time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            results.append(r)

    mem_label = "peak CUDA alloc" if device == "cuda" else "peak RSS increase"
    md = table(results, mem_label)
    cpu = platform.processor() or platform.machine()
    header = (
        f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else cpu}), torch "
        f"{torch.__version__}, threads {args.threads}, N={NUM_CLASSES}, warm-up "
        f"{results[0]['warmup']}, timed steps {results[0]['steps']}"
    )
    print(header)
    print()
    print(md)
    if args.markdown:
        from dcac_plugin.utils.io import atomic_write_text

        cmd = "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))
        atomic_write_text(f"`{cmd}`\n\n{header}\n\n{md}\n", args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

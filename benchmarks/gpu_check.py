"""GPU check: the CUDA code paths of a real run, measured in one command (about 5 minutes on one GPU).

What it runs, each through the project's own code (no weight download: the real-size models start
from random weights of the real sizes, the data is the generated benchmark):

* ``steps``  -- real-size training steps of DCAC (``configs/dcac_ma2ms.yaml``: ViT-B/16 at 256x128,
  SD-1.5 UNet + VAE, LoRA rank 8, VAE view 128x128) and of the CLIP baseline, batch 64 (16 ids x 4),
  through ``DCACEngine.forward_backward`` of an engine built by ``engine.build.build_engine``:
  ``train.amp auto`` (fp16 autocast + GradScaler on CUDA), ``bf16``, ``off`` (fp32), the VAE-moment
  cache (``dcac.sd.cache_vae_moments``) and gradient checkpointing (``dcac.vit_grad_checkpointing``
  + ``dcac.sd.grad_checkpointing``). Images/s over the timed steps (batches prefetched, so data
  loading is not timed) and peak allocated memory (``torch.cuda.max_memory_allocated``, model
  included). One engine per model; the rows switch its precision (``resolve_amp``), the cache and
  checkpointing between them, as the config keys would.
* ``demo``   -- ``tools/train.py`` on the demo configs (DCAC-tiny, CLIP-tiny) for 2 epochs, as a user
  runs it; wall time, the device ``results.json`` records, and the metrics.
* ``eval``   -- ``evaluate_features`` at Market-1501 size (3,368 x 15,913, 512-d structured
  features as in ``benchmarks/bench_eval.py``) on the device, plain and with k-reciprocal
  re-ranking (k1/k2 50/15, the config default), against the same call on the CPU.
* ``ddp``    -- ``torchrun --nproc_per_node 1``: a process group (NCCL on CUDA, gloo on the CPU), the
  engine's DDP wrapper and global-batch BNNeck, steps and an ``all_gather_cat``. The project starts a
  process group only for world sizes above 1, so the child opens it itself; the rest is the run's path.
* ``onnx``   -- export of the 2-epoch DCAC-tiny run and ONNX Runtime's CUDA provider against PyTorch on
  the device, when that provider is installed (otherwise the row says which providers there are).

    python benchmarks/gpu_check.py                          # on a CUDA machine; writes docs/bench_gpu.md
    python benchmarks/gpu_check.py --device cpu --dry-run   # every check at toy size on the CPU (~2 min)
    python benchmarks/gpu_check.py --only steps,eval --out /tmp/gpu.md

``--dry-run`` replaces the real-size models by the tiny ones, runs 1 warm-up and 2 timed steps,
evaluates at 1/10 of Market's size and trains the demo configs for 1 epoch: it proves the script,
not the figures. Prints one table; writes it (and the command, device and versions) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHECKS = ("steps", "demo", "eval", "ddp", "onnx")
logger = logging.getLogger("gpu_check")


@dataclass
class Result:
    """One table row."""

    check: str
    setting: str
    status: str  # 'ok' | 'FAILED' | 'n/a'
    figures: str


@dataclass(frozen=True)
class StepRow:
    """One training-step measurement: a model family and the options switched on its engine."""

    model: str  # 'dcac' | 'base'
    amp: str  # train.amp
    cache: bool = False
    ckpt: bool = False

    @property
    def label(self) -> str:
        extra = (" + VAE-moment cache" if self.cache else "") + (" + grad checkpointing" if self.ckpt else "")
        return f"{'DCAC' if self.model == 'dcac' else 'CLIP baseline'}, train.amp {self.amp}{extra}"


STEP_ROWS = (
    StepRow("base", "auto"), StepRow("base", "bf16"), StepRow("base", "off"),
    StepRow("dcac", "auto"), StepRow("dcac", "bf16"), StepRow("dcac", "off"),
    StepRow("dcac", "auto", cache=True), StepRow("dcac", "auto", ckpt=True),
)


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH", "")] if p])
    return env


def make_data(root: Path) -> Path:
    """The generated benchmark (``small``: enough identities for 16 x 4 batches) under ``root``."""
    from dcac_plugin.data.synthetic import make_synthetic

    make_synthetic(root, scale="small", seed=0, domains=("market1501", "msmt17"))
    return root


# ---------------------------------------------------------------------------------------------- steps
def _step_configs(dry: bool) -> dict[str, tuple[str, list[str]]]:
    if dry:
        return {"dcac": ("configs/demo/dcac_tiny.yaml", []), "base": ("configs/demo/clip_tiny.yaml", [])}
    real = ["dcac.clip_weights", "", "dcac.sd.weights", ""]  # random weights of the real sizes
    return {"dcac": ("configs/dcac_ma2ms.yaml", real), "base": ("configs/clip_baseline_ma2ms.yaml", real)}


def check_steps(device_str: str, data: Path, work: Path, dry: bool, warmup: int, steps: int) -> list[Result]:
    """Real-size (or, dry, tiny) training steps through the engine, one row per :data:`STEP_ROWS`."""
    import torch

    from dcac_plugin.data.manager import build_datamanager
    from dcac_plugin.engine.build import build_engine, build_vae_cache
    from dcac_plugin.engine.dcac_engine import resolve_amp
    from dcac_plugin.runner import load_config

    device = torch.device(device_str)
    cuda = device.type == "cuda"
    results = []
    for model, (config, extra) in _step_configs(dry).items():
        rows = [r for r in STEP_ROWS if r.model == model]
        opts = ["data.root", str(data), "data.sources", "['market1501']", "data.targets", "['market1501']",
                "data.save_dir", str(work / f"steps_{model}"), "data.workers", "4", "train.batch_size", "64",
                "use_gpu", str(cuda)] + extra
        t0 = time.perf_counter()
        cfg = load_config(ROOT / config, opts)
        torch.manual_seed(0)
        use_diffusion = model == "dcac"
        dm = build_datamanager(cfg, use_gpu=cuda, plugin_views=True, vae_view=use_diffusion)
        engine = build_engine(cfg, dm, device, is_plugin=True)
        engine.setup(device=device, save_dir=str(work / f"steps_{model}"), eval_kwargs={})
        cache = build_vae_cache(cfg, dm, engine.model, device) if use_diffusion else None
        batches, it = [], iter(dm.train_loader)
        while len(batches) < warmup + steps:
            try:
                batches.append(next(it))
            except StopIteration:
                it = iter(dm.train_loader)
        engine.on_epoch_start()  # the per-epoch prototype memory rebuild over the training set
        build_s = time.perf_counter() - t0
        n_params = sum(p.numel() for p in engine.model.parameters())
        n_train = sum(p.numel() for p in engine.model.parameters() if p.requires_grad)
        logger.info("%s: built in %.1f s (%s params, %s trainable)", config, build_s, f"{n_params:,}", f"{n_train:,}")
        for row in rows:
            try:
                engine.amp, use_scaler = resolve_amp(row.amp, device)
                engine.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
                engine.vae_cache = cache if row.cache else None
                engine.model.encoder.image_encoder.set_grad_checkpointing(row.ckpt)
                if engine.model.diffusion is not None:
                    engine.model.diffusion.set_grad_checkpointing(row.ckpt)
                if cuda:
                    torch.cuda.synchronize(device)
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                times, out = [], {}
                for i, batch in enumerate(batches):
                    if cuda:
                        torch.cuda.synchronize(device)
                    t = time.perf_counter()
                    out = engine.forward_backward(batch)
                    engine.global_step += 1
                    if cuda:
                        torch.cuda.synchronize(device)
                    if i >= warmup:
                        times.append(time.perf_counter() - t)
                step_s = sorted(times)[len(times) // 2]
                bsz = batches[0]["pid"].shape[0]
                peak = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if cuda else ""
                precision = engine.amp + (" + GradScaler" if use_scaler else "")
                results.append(Result(
                    "steps", f"{row.label} ({precision})", "ok",
                    f"{bsz / step_s:.1f} img/s (median {step_s * 1000:.0f} ms/step, batch {bsz}){peak}; "
                    f"loss id {out['loss_id']:.2f} ldm {out['loss_ldm']:.3f}"))
            except Exception as e:  # noqa: BLE001 - one failed row must not hide the others
                logger.exception("step row %s failed", row.label)
                results.append(Result("steps", row.label, "FAILED", f"{type(e).__name__}: {e}"[:300]))
        results.append(Result("steps", f"{Path(config).name}: build + data + memory rebuild", "ok",
                              f"{build_s:.1f} s; {n_params / 1e6:.1f} M params, {n_train / 1e6:.1f} M trainable"))
        del engine, dm, cache, batches
        if cuda:
            torch.cuda.empty_cache()
    return results


def _run_child(cmd: list[str], product: Path, check: str, setting: str) -> tuple[float, Result | None]:
    """Run ``cmd``; ``(wall seconds, None)`` when it exits 0 and wrote ``product``, else a FAILED row
    with the last lines of its output."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=_python_env())
    wall = time.perf_counter() - t0
    if p.returncode == 0 and product.is_file():
        return wall, None
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return wall, Result(check, setting, "FAILED", f"exit {p.returncode}: {' | '.join(tail)}"[:300])


# ----------------------------------------------------------------------------------------------- demo
def check_demo(device_str: str, data: Path, work: Path, dry: bool) -> list[Result]:
    """``tools/train.py`` on the demo configs, as a user runs it; returns the run folders' metrics."""
    results = []
    epochs = "1" if dry else "2"
    for name in ("dcac_tiny", "clip_tiny"):
        save = work / f"demo_{name}"
        cmd = [sys.executable, str(ROOT / "tools/train.py"), "--config-file", str(ROOT / f"configs/demo/{name}.yaml"),
               "data.root", str(data), "data.save_dir", str(save), "train.max_epoch", epochs,
               "use_gpu", str(device_str == "cuda")]
        rfile = save / "results.json"
        wall, failed = _run_child(cmd, rfile, "demo", f"tools/train.py {name} ({epochs} ep)")
        if failed:
            results.append(failed)
            continue
        rec = json.loads(rfile.read_text())
        metrics = "; ".join(f"{t} mAP {m['mAP']:.1f} R1 {m['rank1']:.1f}" for t, m in rec["results"].items())
        ok = rec["device"].startswith("cuda") == (device_str == "cuda")
        results.append(Result("demo", f"tools/train.py {name} ({epochs} ep)", "ok" if ok else "FAILED",
                              f"{wall:.0f} s wall, device {rec['device']}; {metrics}"))
    return results


# ----------------------------------------------------------------------------------------------- eval
def check_eval(device_str: str, work: Path, dry: bool) -> list[Result]:
    """``evaluate_features`` at Market size on the device (plain and re-ranked) and on the CPU."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_eval import make_data as make_features
    from bench_eval import scaled_size

    from dcac_plugin.evaluation import evaluate_features

    size = scaled_size("market", 0.1 if dry else 1.0)
    folder = work / "eval_features"
    make_features(size, folder)
    arrays = {k: np.load(folder / f"{k}.npy") for k in ("qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids")}
    results = []
    cpu_maps: dict[bool, float] = {}
    for dev in ("cpu", device_str) if device_str != "cpu" else ("cpu",):
        for rerank in (False, True):
            kw = dict(rerank=True, k1=50, k2=15, lambda_value=0.3) if rerank else {}
            device = torch.device(dev)
            qf = torch.from_numpy(arrays["qf"]).to(device)
            gf = torch.from_numpy(arrays["gf"]).to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            m = evaluate_features(qf, gf, arrays["q_pids"], arrays["g_pids"], arrays["q_camids"],
                                  arrays["g_camids"], device=device, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            if dev == "cpu":
                cpu_maps[rerank] = m["mAP"]
            same = "" if dev == "cpu" else f", |mAP - CPU mAP| {abs(m['mAP'] - cpu_maps[rerank]):.2e}"
            peak = (f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
                    if device.type == "cuda" else "")
            results.append(Result(
                "eval", f"{size['num_q']} x {size['num_g']} on {dev}{', re-ranked 50/15' if rerank else ''}", "ok",
                f"{dt:.2f} s; mAP {m['mAP']:.2f} R1 {m['rank1']:.2f}{same}{peak}"))
    return results


# ------------------------------------------------------------------------------------------------ ddp
def ddp_child(device_str: str, data: Path, work: Path) -> None:
    """Run under ``torchrun``: process group, the engine's DDP path, 3 steps, an all-gather."""
    import torch
    import torch.distributed as dist

    from dcac_plugin import distributed as dist_utils
    from dcac_plugin.data.manager import build_datamanager
    from dcac_plugin.engine.build import build_engine, distribute_train_loader
    from dcac_plugin.runner import load_config

    cuda = device_str == "cuda"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    cfg = load_config(ROOT / "configs/demo/dcac_tiny.yaml",
                      ["data.root", str(data), "data.save_dir", str(work / "ddp"), "data.targets", "['market1501']",
                       "use_gpu", str(cuda)])
    dm = build_datamanager(cfg, use_gpu=cuda, plugin_views=True, vae_view=True)
    distribute_train_loader(cfg, dm)
    engine = build_engine(cfg, dm, device, is_plugin=True, distributed=True)
    engine.setup(device=device, save_dir=str(work / "ddp"), eval_kwargs={}, ddp=True)
    engine.on_epoch_start()
    losses = []
    for i, batch in enumerate(dm.train_loader):
        losses.append(engine.forward_backward(batch)["loss"])
        engine.global_step += 1
        if i == 2:
            break
    gathered = dist_utils.all_gather_cat(torch.ones(2, device=device) * dist.get_rank())
    summary = {"backend": dist.get_backend(), "world": dist.get_world_size(), "losses": losses,
               "gathered": gathered.tolist(), "wrapper": type(engine.train_model).__name__,
               "bnneck": next(type(m).__name__ for n, m in engine.model.named_modules() if n.endswith("bnneck"))}
    (work / "ddp_summary.json").write_text(json.dumps(summary))
    dist.destroy_process_group()


def _free_port() -> int:
    """A TCP port free on the loopback now (a fixed one made two checks on one machine collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp(device_str: str, data: Path, work: Path) -> list[Result]:
    """``torchrun --nproc_per_node 1`` of :func:`ddp_child`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(_free_port()),
           str(Path(__file__).resolve()), "--ddp-child", "--device", device_str, "--data", str(data),
           "--work", str(work)]
    summary = work / "ddp_summary.json"
    wall, failed = _run_child(cmd, summary, "ddp", "torchrun --nproc_per_node 1")
    if failed:
        return [failed]
    s = json.loads(summary.read_text())
    return [Result("ddp", f"torchrun --nproc_per_node 1 ({s['backend']})", "ok",
                   f"{wall:.0f} s; {s['wrapper']} over the engine, BNNeck {s['bnneck']}, 3 steps loss "
                   f"{s['losses'][0]:.2f} -> {s['losses'][-1]:.2f}, all_gather {s['gathered']}")]


# ----------------------------------------------------------------------------------------------- onnx
def check_onnx(device_str: str, work: Path) -> list[Result]:
    """ONNX export of the demo DCAC-tiny run; onnxruntime's CUDA provider against PyTorch."""
    run_dir = work / "demo_dcac_tiny"
    try:
        import onnxruntime as ort
    except ImportError:
        return [Result("onnx", "onnxruntime", "n/a", "onnxruntime is not installed (pip install -e '.[export]')")]
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return [Result("onnx", "onnxruntime CUDAExecutionProvider", "n/a",
                       f"not in this onnxruntime build (providers: {', '.join(providers)}; install onnxruntime-gpu)")]
    if not (run_dir / "results.json").is_file():
        return [Result("onnx", "onnxruntime CUDAExecutionProvider", "n/a", "needs the demo check's DCAC-tiny run")]
    import numpy as np
    import torch

    from dcac_plugin import FeatureExtractor
    from dcac_plugin.inference.export import export_onnx

    fx = FeatureExtractor.from_run(run_dir, device=device_str)
    path = export_onnx(fx, work / "dcac_tiny.onnx", dynamic_batch=True)
    sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    x = torch.randn(16, 3, *fx.image_size)
    with torch.no_grad():
        ref = fx.model(x.to(fx.device)).float().cpu().numpy()
    t0 = time.perf_counter()
    got = sess.run(["features"], {"images": x.numpy()})[0]
    dt = time.perf_counter() - t0
    diff = float(np.abs(got - ref).max())
    return [Result("onnx", "onnxruntime CUDAExecutionProvider vs PyTorch", "ok" if diff < 1e-3 else "FAILED",
                   f"max /diff/ {diff:.2e} on 16 images; provider {sess.get_providers()[0]}; {dt * 1000:.0f} ms")]


# ----------------------------------------------------------------------------------------------- main
def render(results: list[Result]) -> str:
    """Markdown table of the results."""
    lines = ["| check | setting | status | figures |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.setting} | {r.status} | {r.figures.replace('|', '/')} |" for r in results]
    return "\n".join(lines)


def environment(device_str: str) -> str:
    """One line: device, torch, CUDA, cuDNN, host."""
    import torch

    if device_str == "cuda":
        props = torch.cuda.get_device_properties(0)
        dev = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor})"
        cu = f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        dev, cu = f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})", ""
    return f"{dev}; torch {torch.__version__}{cu}; Python {platform.python_version()}; {os.cpu_count()} CPU cores"


def _shown_args(argv: list[str]) -> list[str]:
    """The command's arguments without the output and scratch paths (they change no figure)."""
    shown, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--out", "--work", "--data"):
            skip = True
        elif not a.startswith(("--out=", "--work=", "--data=")):
            shown.append(a)
    return shown


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes: proves the script, not the figures")
    ap.add_argument("--only", default=",".join(CHECKS), help=f"comma list of {','.join(CHECKS)}")
    ap.add_argument("--data", default=None, help="generated-benchmark root to use/make (default: a temp folder)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder, removed at the end)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per row (default 10; dry 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per row (default 3; dry 1)")
    ap.add_argument("--out", default=None, help="markdown file (default docs/bench_gpu.md; dry: none)")
    ap.add_argument("--ddp-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    if args.ddp_child:
        ddp_child(args.device, Path(args.data), Path(args.work))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch.cuda.is_available() is False; run with --device cpu --dry-run")
    checks = [c.strip() for c in args.only.split(",") if c.strip()]
    bad = [c for c in checks if c not in CHECKS]
    if bad or not checks:
        raise SystemExit(f"error: --only {args.only!r}: choose from {','.join(CHECKS)}")
    dry = args.dry_run
    warmup = args.warmup if args.warmup is not None else (1 if dry else 3)
    steps = args.steps if args.steps is not None else (2 if dry else 10)
    out = args.out if args.out is not None else (None if dry else str(ROOT / "docs/bench_gpu.md"))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    results: list[Result] = []
    try:
        data = make_data(Path(args.data) if args.data else work / "data")
        for check in checks:
            t0 = time.perf_counter()
            logger.info("check %s ...", check)
            try:
                if check == "steps":
                    results += check_steps(args.device, data, work, dry, warmup, steps)
                elif check == "demo":
                    results += check_demo(args.device, data, work, dry)
                elif check == "eval":
                    results += check_eval(args.device, work, dry)
                elif check == "ddp":
                    results += check_ddp(args.device, data, work)
                elif check == "onnx":
                    results += check_onnx(args.device, work)
            except Exception as e:  # noqa: BLE001 - reported in the table; the other checks still run
                logger.exception("check %s failed", check)
                results.append(Result(check, "(whole check)", "FAILED", f"{type(e).__name__}: {e}"[:300]))
            logger.info("check %s took %.0f s", check, time.perf_counter() - t0)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t_all
    cmd = "python benchmarks/gpu_check.py " + " ".join(_shown_args(argv if argv is not None else sys.argv[1:]))
    head = f"`{cmd.strip()}` — {environment(args.device)}; total {total:.0f} s"
    head += " (dry run: toy sizes)" if dry else ""
    table = render(results)
    print(head + "\n\n" + table)
    if out:
        from dcac_plugin.utils.io import atomic_write_text

        what = "\n\n".join(__doc__.split("\n\n")[1:3])
        atomic_write_text(f"# GPU check\n\n{what}\n\n{head}\n\n{table}\n", out)
    return 1 if any(r.status == "FAILED" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Validate lancefeed's device path on a GPU, in one run (``scripts/gpu_check.sh`` starts it).

Checks, each a key of the JSON it writes (``--out``/gpu_check.json) and a line it prints:

- ``cuda_tests``: ``tests/test_cuda.py`` with the GPU present (its GPU tests run: every
  kind of loader, detection and slow path included, on the GPU against the CPU);
- ``exact``: GPU batches against CPU batches: uint8 exact, float32 within 1e-5, bfloat16,
  channels_last, ``mode="L"``;
- ``race``: copies delayed on the side stream (a sleep kernel queued before each), 2 ring
  buffers, prefetch 8, two epochs: every sample's id and checksum right; and the two
  controls, which must come out wrong: the ring not waiting for a copy, the consumer not
  waiting for the batch;
- ``sanitizer``: ``TORCH_CUDA_SANITIZER=1`` over 20 batches, on the default stream and on
  a stream of the training loop's own;
- ``cleanup``: 30 early breaks and one decode error, then threads and CUDA memory back
  to where they were;
- ``resnet``: a ResNet-50 training step (batch 256, bfloat16 autocast, channels_last) fed
  by lancefeed, against the same step on a batch already on the GPU, and against the
  decode rate of the host's cores: images/s, the loader's waits (``stats()``).

``--device cpu`` runs every check that does not need CUDA through the same code on the
CPU (``CudaPrefetcher(device="cpu")``), with small sizes: the tests run it so.

    bash scripts/gpu_check.sh                 # on a machine with a GPU: ~5 minutes on one H100
    python3 scripts/gpu_check.py --device cpu --small --out /tmp/gpu-check   # the dry run
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data -----------------------------------------------------------------------------


def id_image(i: int, h: int = 8, w: int = 10) -> bytes:
    """A PNG whose pixels name it: red + 256 * green is ``i``, blue a ramp."""
    from PIL import Image

    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0], a[..., 1] = i % 256, i // 256
    a[..., 2] = (np.arange(w) * 25) % 256
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def photo(i: int, side: int) -> bytes:
    """A JPEG with photo-like content (smooth gradients and noise), ``side`` pixels square."""
    from PIL import Image

    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = np.stack([np.sin(6 * x + rng.uniform(0, 6)), np.cos(5 * y + rng.uniform(0, 6)), x * y], -1)
    noise = rng.normal(0, 0.15, (side, side, 3))
    a = np.clip((base + noise) * 80 + 128, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build_datasets(root: Path, ids: int, photos: int, side: int) -> Tuple[str, str]:
    """Two Lance datasets written by pylance's defaults: images that name themselves,
    and photo-like JPEGs with 1,000 classes."""
    import lance
    import pyarrow as pa

    ids_uri, photos_uri = str(root / "ids.lance"), str(root / "photos.lance")
    table = pa.table({"image": pa.array([id_image(i) for i in range(ids)], pa.binary()),
                      "label": pa.array([i % 7 for i in range(ids)], pa.int64())})
    lance.write_dataset(table, ids_uri)
    rng = np.random.default_rng(0)
    table = pa.table({"image": pa.array([photo(i, side) for i in range(photos)], pa.binary()),
                      "label": pa.array(rng.integers(0, 1000, photos), pa.int64())})
    lance.write_dataset(table, photos_uri)
    return ids_uri, photos_uri


def sample_ids(images: torch.Tensor) -> List[int]:
    """The ids of a uint8 NHWC batch of ``id_image``s."""
    px = images[:, 0, 0, :].to(torch.int64).cpu()
    return (px[:, 0] + 256 * px[:, 1]).tolist()


def checksum(images: torch.Tensor) -> List[int]:
    flat = images.cpu().reshape(images.shape[0], -1).to(torch.int64)
    return (flat * torch.arange(1, flat.shape[1] + 1)).sum(1).tolist()


def on_device(loader: Any, device: str) -> Any:
    """``loader`` delivering on ``device``: itself with ``device="cuda"``, or through a CPU prefetcher."""
    import lancefeed

    return lancefeed.CudaPrefetcher(loader, device="cpu") if device == "cpu" else loader


def to_host(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_host(v) for v in value)
    return value


def max_diff(a: Any, b: Any) -> float:
    """The largest difference between two batches (inf where they do not match in shape)."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return float("inf")
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, dict):
        return max([max_diff(a[k], b.get(k)) for k in a], default=0.0) if isinstance(b, dict) and a.keys() == b.keys() else float("inf")
    if isinstance(a, (list, tuple)):
        return max([max_diff(x, y) for x, y in zip(a, b)], default=0.0) if len(a) == len(b) else float("inf")
    return 0.0 if a == b else float("inf")


# -- checks ---------------------------------------------------------------------------


def check_cuda_tests(device: str) -> Dict[str, Any]:
    if device == "cpu":
        return {"skipped": "the tests' GPU part needs CUDA (the CPU part runs in the suite)"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
    return {"ok": proc.returncode == 0, "summary": tail[0] if tail else ""}


def check_exact(ids_uri: str, device: str) -> Dict[str, Any]:
    import lancefeed

    configs: Dict[str, Tuple[Dict[str, Any], float]] = {
        "uint8": ({"transform": lancefeed.RandomResizedCrop(6)}, 0.0),
        "float32": ({"normalize": (MEAN, STD)}, 1e-5),
        "bfloat16": ({"normalize": (MEAN, STD), "normalize_dtype": "bfloat16"}, 1 / 64),
        "channels_last": ({"normalize": (MEAN, STD), "channels_last": True}, 1e-5),
        "mode L": ({"mode": "L", "normalize": ((0.5,), (0.5,))}, 1e-5),
    }
    out: Dict[str, Any] = {}
    for name, (kwargs, tol) in configs.items():
        common = dict(batch_size=16, shuffle=True, seed=5, **kwargs)
        want = [to_host(b) for b in lancefeed.DataLoader(ids_uri, **common)]
        dev_kwargs = dict(common, device=device) if device != "cpu" else common
        got_batches = list(on_device(lancefeed.DataLoader(ids_uri, **dev_kwargs), device))
        devices = sorted({t.device.type for b in got_batches for t in _tensors(b)})
        got = [to_host(b) for b in got_batches]
        diff = max(max_diff(g, w) for g, w in zip(got, want)) if len(got) == len(want) else float("inf")
        layout_ok = True
        if kwargs.get("channels_last"):
            layout_ok = all(b[0].is_contiguous(memory_format=torch.channels_last) for b in got_batches)
        out[name] = {"ok": diff <= tol and layout_ok and devices == [_device_type(device)], "max_abs_diff": diff,
                     "tolerance": tol, "devices": devices}
    return out


def _tensors(value: Any) -> List[torch.Tensor]:
    from lancefeed.loader.backends import tensors

    return list(tensors(value))


def _device_type(device: str) -> str:
    return torch.device(device).type


def _race_run(ids_uri: str, epochs: int = 2) -> Tuple[List[List[int]], List[List[int]]]:
    import lancefeed

    loader = lancefeed.DataLoader(ids_uri, batch_size=8, shuffle=True, seed=9, prefetch=8)
    pre = lancefeed.CudaPrefetcher(loader, "cuda", num_buffers=2)
    ids, sums = [], []
    for epoch in range(epochs):
        pre.set_epoch(epoch)
        for images, _ in pre:
            ids.append(sample_ids(images))
            sums.append(checksum(images))
    return ids, sums


def check_race(ids_uri: str, device: str, sleep_cycles: int) -> Dict[str, Any]:
    """Late copies must not change a batch; the controls must."""
    if device == "cpu":
        return {"skipped": "needs a CUDA side stream"}
    import lancefeed
    from lancefeed.loader.backends import CudaBackend

    loader = lancefeed.DataLoader(ids_uri, batch_size=8, shuffle=True, seed=9)
    want_ids, want_sums = [], []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for images, _ in loader:
            want_ids.append(sample_ids(images))
            want_sums.append(checksum(images))
    send_pinned, synchronize, receive = CudaBackend.send_pinned, CudaBackend.synchronize, CudaBackend.receive

    def late(self: CudaBackend, host: torch.Tensor) -> torch.Tensor:
        torch.cuda._sleep(sleep_cycles)  # queued on the side stream before the copy
        return send_pinned(self, host)

    def no_wait(self: CudaBackend, value: Any, ready: Any) -> Any:
        stream = self.cuda.current_stream(self.index)
        for t in _tensors(value):
            t.record_stream(stream)
        return value

    runs: Dict[str, Dict[str, Callable[..., Any]]] = {
        "late copies": {"send_pinned": late},
        "control: ring does not wait": {"send_pinned": late, "synchronize": lambda self, event: None},
        "control: consumer does not wait": {"send_pinned": late, "receive": no_wait},
    }
    out: Dict[str, Any] = {}
    for name, patches in runs.items():
        for attr, fn in patches.items():
            setattr(CudaBackend, attr, fn)
        try:
            ids, sums = _race_run(ids_uri)
            torch.cuda.synchronize()
        finally:
            CudaBackend.send_pinned, CudaBackend.synchronize, CudaBackend.receive = send_pinned, synchronize, receive
        right = ids == want_ids and sums == want_sums
        wrong = sum(a != b for a, b in zip(sums, want_sums))
        out[name] = {"batches": len(sums), "wrong_batches": wrong, "right": right}
    out["ok"] = out["late copies"]["right"] and not out["control: ring does not wait"]["right"] \
        and not out["control: consumer does not wait"]["right"]
    return out


SANITIZED = r"""
import sys, torch, lancefeed
uri = sys.argv[1]
mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
loader = lancefeed.DataLoader(uri, batch_size=4, shuffle=True, normalize=(mean, std), device="cuda", prefetch=4)
user = torch.cuda.Stream()
for stream in (None, user):
    n = 0
    with torch.cuda.stream(stream) if stream is not None else torch.cuda.stream(torch.cuda.current_stream()):
        while n < 20:
            for images, labels in loader:
                (images.float().sum() + labels.sum()).item()
                n += 1
                if n == 20:
                    break
print("ok")
"""


def check_sanitizer(ids_uri: str, device: str) -> Dict[str, Any]:
    if device == "cpu":
        return {"skipped": "the sanitizer watches CUDA streams"}
    env = dict(os.environ, TORCH_CUDA_SANITIZER="1")
    proc = subprocess.run([sys.executable, "-c", SANITIZED, ids_uri], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)
    return {"ok": proc.returncode == 0 and proc.stdout.strip().endswith("ok"),
            "stderr_tail": proc.stderr[-1500:] if proc.returncode else ""}


def check_cleanup(ids_uri: str, root: Path, device: str) -> Dict[str, Any]:
    import lance
    import pyarrow as pa

    import lancefeed

    def memory() -> int:
        return torch.cuda.memory_allocated() if device != "cpu" else 0

    gc.collect()
    threads0, memory0 = threading.active_count(), memory()
    kwargs = dict(batch_size=4, shuffle=True, normalize=(MEAN, STD), prefetch=4)
    loader = lancefeed.DataLoader(ids_uri, device=device, **kwargs) if device != "cpu" else \
        lancefeed.CudaPrefetcher(lancefeed.DataLoader(ids_uri, **kwargs), "cpu")
    for k in range(30):
        for i, _batch in enumerate(loader):
            if i == k % 4:
                break
    bad = str(root / "bad.lance")
    lance.write_dataset(pa.table({"image": pa.array([id_image(i) for i in range(6)] + [b"not an image"], pa.binary())}), bad)
    raised = False
    try:
        for _ in lancefeed.DataLoader(bad, batch_size=2, device=device if device != "cpu" else None):
            pass
    except lancefeed.DecodeError:
        raised = True
    del loader, _batch
    deadline = time.monotonic() + 10
    while (threading.active_count() > threads0 or memory() > memory0) and time.monotonic() < deadline:
        gc.collect()
        if device != "cpu":
            torch.cuda.synchronize()
        time.sleep(0.05)
    threads1, memory1 = threading.active_count(), memory()
    return {"ok": raised and threads1 <= threads0 and memory1 <= memory0, "decode_error_raised": raised,
            "threads": [threads0, threads1], "cuda_memory_allocated": [memory0, memory1]}


def _train_step(model: Any, opt: Any, device: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device_type=_device_type(device), dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def check_resnet(photos_uri: str, device: str, model_name: str, batch: int, steps: int, crop: int) -> Dict[str, Any]:
    """The fed step against the resident one and the host's decode rate."""
    import torchvision

    import lancefeed

    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(num_classes=1000).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = _train_step(model, opt, device)
    warmup = 3
    x = torch.randn(batch, 3, crop, crop, device=device).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    for _ in range(warmup):
        step(x, y)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    _sync(device)
    resident = steps * batch / (time.perf_counter() - t0)

    transform = [lancefeed.RandomResizedCrop(crop), lancefeed.RandomHorizontalFlip()]
    common = dict(batch_size=batch, shuffle=True, drop_last=True, transform=transform, normalize=(MEAN, STD),
                  normalize_dtype="bfloat16", channels_last=True)
    # The host's decode rate: the same loader on the CPU, nothing else running.
    cpu_loader = lancefeed.DataLoader(photos_uri, **common)
    done, t0 = 0, time.perf_counter()
    while done < (steps + warmup) * batch:
        for images, _ in cpu_loader:
            done += len(images)
    decode = done / (time.perf_counter() - t0)

    loader = lancefeed.DataLoader(photos_uri, device=device, **common) if device != "cpu" else \
        lancefeed.CudaPrefetcher(lancefeed.DataLoader(photos_uri, **common), "cpu")
    n, t0 = 0, None
    while n < steps + warmup:
        for images, labels in loader:
            step(images, labels)
            n += 1
            if n == warmup:
                _sync(device)
                t0 = time.perf_counter()
            if n == steps + warmup:
                break
    _sync(device)
    fed = steps * batch / (time.perf_counter() - t0)
    stats = (loader.loader if hasattr(loader, "loader") else loader).stats()
    target = 0.95 * min(resident, decode)
    return {
        # On the CPU the step and the decode share the cores: no target there.
        "ok": fed >= target if device != "cpu" else True,
        "target": "fed >= 0.95 x min(resident, host decode)" if device != "cpu" else "none on the CPU",
        "model": model_name, "batch": batch, "steps": steps, "crop": crop,
        "resident_images_per_s": round(resident, 1),
        "host_decode_images_per_s": round(decode, 1),
        "fed_images_per_s": round(fed, 1),
        "fed_over_resident": round(fed / resident, 3),
        "fed_over_target_floor": round(fed / (target / 0.95), 3),
        "wait_p50_s": stats.get("wait_p50_s"), "wait_p95_s": stats.get("wait_p95_s"),
        "io_wait_s": stats.get("io_wait_s"), "decode_s": stats.get("decode_s"),
        "host_cores": os.cpu_count(),
    }


# -- the run --------------------------------------------------------------------------


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for the dry run")
    p.add_argument("--out", type=Path, default=Path("gpu-check"), help="folder for gpu_check.json")
    p.add_argument("--small", action="store_true", help="small sizes (the CPU dry run)")
    p.add_argument("--only", default="", help="comma-separated checks to run (default: all)")
    args = p.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        log(f"no CUDA device (torch {torch.__version__}, CUDA {torch.version.cuda}); --device cpu for the dry run")
        return 2
    small = args.small or args.device == "cpu"
    sizes = dict(ids=64, photos=48, side=72, model="resnet18", batch=8, steps=2, crop=56) if small else \
        dict(ids=512, photos=4096, side=256, model="resnet50", batch=256, steps=30, crop=224)
    args.out.mkdir(parents=True, exist_ok=True)
    env: Dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": args.device,
                           "host_cores": os.cpu_count(), "sizes": sizes}
    if args.device != "cpu":
        env["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    import lancefeed

    env["lancefeed"] = getattr(lancefeed, "__version__", "?")
    results: Dict[str, Any] = {"environment": env}
    only = {s for s in args.only.split(",") if s}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        t0 = time.perf_counter()
        ids_uri, photos_uri = build_datasets(Path(tmp), sizes["ids"], sizes["photos"], sizes["side"])
        log(f"datasets: {time.perf_counter() - t0:.1f} s")
        checks: Dict[str, Callable[[], Dict[str, Any]]] = {
            "cuda_tests": lambda: check_cuda_tests(args.device),
            "exact": lambda: check_exact(ids_uri, args.device),
            "race": lambda: check_race(ids_uri, args.device, sleep_cycles=2_000_000),
            "sanitizer": lambda: check_sanitizer(ids_uri, args.device),
            "cleanup": lambda: check_cleanup(ids_uri, Path(tmp), args.device),
            "resnet": lambda: check_resnet(photos_uri, args.device, sizes["model"], sizes["batch"], sizes["steps"],
                                           sizes["crop"]),
        }
        for name, check in checks.items():
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            try:
                results[name] = check()
            except Exception as exc:  # noqa: BLE001 - one failed check must not hide the others
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            results[name]["seconds"] = round(time.perf_counter() - t0, 1)
            log(f"{name}: {json.dumps(results[name])}")
            (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    failed = [k for k, v in results.items() if k != "environment" and not _passed(v)]
    log("all checks passed" if not failed else f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def _passed(result: Dict[str, Any]) -> bool:
    if "skipped" in result:
        return True
    if "ok" in result:
        return bool(result["ok"])
    return all(_passed(v) for v in result.values() if isinstance(v, dict))


if __name__ == "__main__":
    sys.exit(main())

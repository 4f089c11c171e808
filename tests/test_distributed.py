"""Many ranks for real: ``torchrun`` (torch.distributed.run) with 2 and 3 processes on the
gloo backend, each running ``lancefeed.DataLoader`` over its shard and a tiny DDP model;
and an elastic restart that saves the state at one world size and resumes at another."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

N = 41  # prime: no world size divides it, so every run has a remainder to leave out

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import lancefeed

    uri, out, steps, state_in, state_out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    loader = lancefeed.DataLoader(uri, 4, shuffle=True, seed=7, columns=["image", "idx"])
    loader.set_epoch(1)
    if state_in != "-":
        with open(state_in) as f:
            loader.load_state_dict(json.load(f))
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8 * 8 * 3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ids, losses = [], []
    for k, (images, idx) in enumerate(loader):
        ids += idx.tolist()
        x = images.reshape(len(images), -1).float() / 255
        loss = (model(x).squeeze(1) - idx.float() / 41).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if steps and k + 1 == steps:
            break
    # DDP keeps the replicas equal: every rank ends with the same weights.
    w = model.module.weight.detach().clone()
    gathered = [torch.zeros_like(w) for _ in range(world)]
    dist.all_gather(gathered, w)
    same = all(torch.equal(g, gathered[0]) for g in gathered)
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"rank": rank, "world": world, "ids": ids, "steps": len(losses), "same_weights": same,
                   "len": len(loader), "losses": losses}, f)
    if state_out != "-" and rank == 0:
        with open(state_out, "w") as f:
            json.dump(loader.state_dict(), f)
    # Every rank done before the group goes: a rank that tears gloo down while another
    # still talks to it aborts the process.
    dist.barrier()
    dist.destroy_process_group()
    # Then out without the interpreter's teardown: torch's C++ threads now and then abort
    # there ("terminate called without an active exception", SIGABRT) after all the work
    # is done and written, which would fail the run for nothing lancefeed did.
    sys.stdout.flush()
    os._exit(0)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("dist")
    blobs = []
    for i in range(N):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), i * 5, np.uint8)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    out = str(path / "ds.lance")
    lance.write_dataset(pa.table({"image": pa.array(blobs, pa.binary()), "idx": pa.array(range(N))}), out)
    return out


def torchrun(tmp: Path, uri: str, procs: int, *, steps: int = 0, state_in: str = "-", state_out: str = "-") -> list[dict]:
    script = tmp / "train.py"
    script.write_text(SCRIPT)
    out = tmp / f"run-{procs}-{steps}-{os.urandom(3).hex()}"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={procs}", "--master-addr=127.0.0.1",
           f"--master-port={_free_port()}", str(script), uri, str(out), str(steps), state_in, state_out]
    env = dict(os.environ, OMP_NUM_THREADS="1", LANCEFEED_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(procs)]


@pytest.mark.parametrize("procs", [2, 3])
def test_torchrun_ranks_read_disjoint_shards_in_equal_steps_and_train(tmp_path: Path, uri: str, procs: int) -> None:
    runs = torchrun(tmp_path, uri, procs)
    ids = [i for r in runs for i in r["ids"]]
    assert len(ids) == len(set(ids)) == N - N % procs  # each once; only the remainder left out
    assert {r["steps"] for r in runs} == {runs[0]["len"]}  # every rank the same number of steps
    assert all(r["same_weights"] for r in runs)
    assert all(np.isfinite(r["losses"]).all() for r in runs)


@pytest.mark.parametrize("before, after", [(3, 2), (2, 3)])
def test_checkpoint_at_one_world_size_resumes_at_another(tmp_path: Path, uri: str, before: int, after: int) -> None:
    state = tmp_path / "state.json"
    first = torchrun(tmp_path, uri, before, steps=2, state_out=str(state))
    rest = torchrun(tmp_path, uri, after, state_in=str(state))
    ids = [i for r in first + rest for i in r["ids"]]
    assert len(ids) == len(set(ids)), "a sample was read twice in the epoch"
    assert N - len(ids) < after  # the rest re-sharded: only its remainder is left out
    assert len({r["steps"] for r in rest}) == 1

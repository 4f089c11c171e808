"""``lancefeed bench`` on a dataset in an S3 store (moto, on loopback): storage options
from the command line, secrets kept out of every output, the loader's stats reported."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import lance
import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("moto.server", reason="needs moto[server] (the test extras)")

from lancefeed.bench import harness, run_loader  # noqa: E402
from lancefeed.bench.data import synthetic_image  # noqa: E402
from lancefeed.bench.options import ENV, parse_storage_options, redacted, scrub  # noqa: E402
from lancefeed.bench.results import stats_line  # noqa: E402
from s3server import ProxyProcess, S3Server  # noqa: E402

# moto (without auth) takes any key pair: these are made up so that a leak is unmistakable.
ACCESS = "AKIABENCHLEAKCHECK01"
SECRET = "bench-s3cr3t-Zq9xWv7Lp"
# Bounds against a hang, not speed: a start-up imports torch and pylance twice (the CLI
# and the loader's process), minutes on a slow, busy machine.
BOUND_S = 300.0
LABELS = ["dog", "cat"]


def jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    synthetic_image(np.random.default_rng(i), 32, 32).save(buf, "JPEG", quality=75)
    return buf.getvalue()


@pytest.fixture(scope="module")
def s3_uri(s3: S3Server) -> str:
    s3.create_bucket("benchdata")
    uri = "s3://benchdata/small.lance"
    n = 48
    table = pa.table({"image": pa.array([jpeg(i) for i in range(n)], pa.binary()),
                      "label": pa.array([LABELS[i % 2] for i in range(n)])})
    lance.write_dataset(table, uri, storage_options=s3.storage_options())
    return uri


def option_args(options: Dict[str, str]) -> List[str]:
    return [a for k, v in options.items() for a in ("--storage-option", f"{k}={v}")]


def bench(
    args: List[str], timeout: float = BOUND_S, aws: Dict[str, str] | None = None
) -> "subprocess.CompletedProcess[str]":
    # A process of its own, as a user runs it: everything it prints is captured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(aws or {})
    return subprocess.run([sys.executable, "-m", "lancefeed", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_no_secret(*texts: str, folder: Path | None = None) -> None:
    for text in texts:
        assert SECRET not in text and ACCESS not in text
    for path in (folder.rglob("*") if folder else []):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and ACCESS.encode() not in data, path


def test_bench_reads_an_s3_dataset_with_storage_options_and_reports_stats(
    s3: S3Server, s3_uri: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    opts = s3.storage_options(aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
    p = bench([s3_uri, *option_args(opts), "--loaders", "lancefeed", "--limit", "32", "--transform", "none",
               "--out", str(out), "--threads", "2", "--timeout", "300", "--stall-timeout", "120", "--startup-timeout", "300"])
    assert p.returncode == 0, p.stderr[-2000:]
    assert_no_secret(p.stdout, p.stderr, folder=out)
    saved = json.loads((out / "results.json").read_text())
    (r,) = saved["results"]
    assert (r["dataset"], r["loader"], r["status"]) == ("small", "lancefeed", "ok")
    assert r["images"] >= 32 and r["images_per_s"] > 0
    # The settings say which options were used, with the credentials masked.
    settings = saved["settings"]["storage_options"]
    assert settings["aws_endpoint"] == opts["aws_endpoint"]
    assert settings["aws_secret_access_key"] == settings["aws_access_key_id"] == "***"
    stats = r["loader_stats"]
    for key in ("io_wait_s", "decode_s", "wait_p50_s", "wait_p95_s"):
        assert isinstance(stats[key], float) and stats[key] >= 0, key
    assert stats["takes"] >= 1 and stats["bytes_read"] > 0 and isinstance(stats["io_bound"], bool)
    assert stats["batches"] >= 1
    line = next(ln for ln in p.stdout.splitlines() if "lancefeed stats:" in ln)
    assert line.startswith("small: lancefeed stats: I/O-bound: ") and f"{stats['takes']:,} takes" in line
    # The table row has a rate.
    row = next(ln.split() for ln in p.stdout.splitlines() if ln.startswith("small ") and "lancefeed" in ln)
    assert float(row[2].replace(",", "")) > 0 and row[-1] == "ok"


def test_bench_takes_the_aws_environment_variables_as_lance_does(s3: S3Server, s3_uri: str, tmp_path: Path) -> None:
    aws = {"AWS_ENDPOINT": s3.endpoint, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    out = tmp_path / "out"
    p = bench([s3_uri, "--loaders", "lancefeed", "--limit", "16", "--transform", "none", "--out", str(out),
               "--threads", "1"], aws=aws)
    assert p.returncode == 0, p.stderr[-2000:]
    (r,) = json.loads((out / "results.json").read_text())["results"]
    assert r["status"] == "ok" and r["images"] >= 16
    assert_no_secret(p.stdout, p.stderr, folder=out)


def test_peers_that_open_the_dataset_by_uri_read_through_the_options(s3: S3Server, s3_uri: str, tmp_path: Path) -> None:
    # take-pillow opens lance.dataset(uri) itself; imagefolder-pillow exports the rows as
    # files first: both through the store, with the options the worker was handed.
    from lancefeed.bench import run_bench

    opts = s3.storage_options(aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
    report = run_bench(s3_uri, transform="none", limit=16, loaders=["take-pillow", "imagefolder-pillow"],
                       out=tmp_path / "out", progress=False, storage_options=opts, workers=0, threads=1,
                       timeout=300, stall_timeout=120, startup_timeout=300)
    assert [(r.loader, r.status) for r in report.results] == [("take-pillow", "ok"), ("imagefolder-pillow", "ok")], [
        r.message for r in report.results
    ]
    assert all(r.images >= 16 and r.loader_stats is None for r in report.results)
    assert_no_secret(folder=tmp_path / "out")


def test_refused_credentials_fail_fast_with_a_clear_error(tmp_path: Path) -> None:
    with S3Server(auth=True) as server:
        server.create_bucket("locked")
        opts = server.storage_options(aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
        start = time.monotonic()
        p = bench(["s3://locked/ds.lance", *option_args(opts), "--loaders", "lancefeed", "--out", str(tmp_path / "o")])
        elapsed = time.monotonic() - start
    assert p.returncode == 1
    assert "lancefeed: error:" in p.stderr and "refused the credentials" in p.stderr
    assert "s3://locked/ds.lance" in p.stderr and "Traceback" not in p.stderr
    assert_no_secret(p.stdout, p.stderr, folder=tmp_path / "o")
    assert elapsed < BOUND_S


def test_a_malformed_storage_option_is_an_error_that_does_not_repeat_it(tmp_path: Path) -> None:
    p = bench(["s3://b/x.lance", "--storage-option", SECRET, "--out", str(tmp_path / "o")])
    assert p.returncode == 1 and "--storage-option number 1 is not KEY=VALUE" in p.stderr
    assert_no_secret(p.stdout, p.stderr)


def test_the_options_reach_the_worker_in_its_environment_not_its_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launched: List[Dict[str, object]] = []
    real = harness.subprocess.Popen

    def recording(args: List[str], **kwargs: object) -> object:
        launched.append({"args": args, "env": kwargs.get("env")})
        return real(args, **kwargs)

    monkeypatch.setattr(harness.subprocess, "Popen", recording)
    r = run_loader({"loader": "_fail", "storage_options": {"aws_secret_access_key": SECRET}}, dataset="d",
                   description="fails", timeout=60, stall_timeout=60)
    assert r.status == "failed" and "fails on purpose" in r.message
    (call,) = launched
    assert not any(SECRET in str(a) for a in call["args"])  # type: ignore[union-attr]
    env = call["env"]
    assert isinstance(env, dict) and json.loads(env[ENV]) == {"aws_secret_access_key": SECRET}


def test_options_parse_redact_and_scrub() -> None:
    opts = parse_storage_options(["aws_region=eu-west-1", "aws_session_token=a=b", "Password=p4ss", "allow_http=true"])
    assert opts == {"aws_region": "eu-west-1", "aws_session_token": "a=b", "Password": "p4ss", "allow_http": "true"}
    assert redacted(opts) == {"aws_region": "eu-west-1", "aws_session_token": "***", "Password": "***",
                              "allow_http": "true"}
    assert scrub("token a=b and p4ss in eu-west-1", opts) == "token *** and *** in eu-west-1"
    for bad in (["novalue"], ["=v"]):
        with pytest.raises(ValueError, match="not KEY=VALUE"):
            parse_storage_options(bad)


def test_stats_line() -> None:
    line = stats_line({"io_bound": True, "wait_p50_s": 0.0001, "wait_p95_s": 0.0032, "decode_s": 1.25,
                       "io_wait_s": 3.0, "takes": 1600, "bytes_read": 120_000_000})
    assert line == ("I/O-bound: yes; loop waited p50 0.1 ms p95 3.2 ms; decode 1.2 s, waiting on reads 3.0 s; "
                    "1,600 takes, 120.0 MB")
    assert stats_line(None) == ""


def test_the_proxy_process_delays_each_request_and_stops(s3: S3Server, s3_uri: str) -> None:
    # benches/bench_s3.py's proxy, in a process of its own.
    with ProxyProcess(s3.port, delay_ms=300) as proxy:
        opts = s3.storage_options(port=proxy.port)
        start = time.monotonic()
        rows = lance.dataset(s3_uri, storage_options=opts).count_rows()
        elapsed = time.monotonic() - start
    assert rows == 48 and elapsed >= 0.3
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()

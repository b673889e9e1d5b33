"""mlp-serve against `mlflow models serve` of the same model, under the same load, in one
run: closed-loop clients on 127.0.0.1 (wrk, a C load generator that leaves the cores to
the servers), single images and batches of 32, at each concurrency level, every answer
checked against the classes the model gives in-process.

    python scripts/benchmark_serve.py --checkpoint runs/RUN/best.pt
    python scripts/benchmark_serve.py --checkpoint runs/RUN/best.pt --onnx model.onnx \\
        --seconds 10 --json-out serve.json --markdown serve.md
    python scripts/benchmark_serve.py --checkpoint runs/RUN/best.pt --quick   # a smoke test

Servers: mlp-serve of the ONNX export (--onnx; default: exported here) with raw uint8
bodies and with JSON pixel arrays, and mlflow's pyfunc (the checkpoint, torch) with
JSON pixel arrays, the one body it takes. Each row: requests and images per second,
p50/p95/p99 latency, failed or wrong answers, the server's memory (all its processes)
after warm-up and at the end. A last run sends one malformed request in ten to
mlp-serve: the others must keep their answers and memory must stay within 10%.
Needs wrk (apt-get install wrk) and the serve and tracking extras.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

WRK_SCRIPT = r"""
local body_file, kind, expected_file, bad_every = os.getenv("BODY"), os.getenv("KIND"),
  os.getenv("EXPECTED"), tonumber(os.getenv("BAD_EVERY") or "0")
local function read(path)
  local f = assert(io.open(path, "rb")); local s = f:read("*a"); f:close(); return s
end
local expected = {}
for name in read(expected_file):gmatch("[^\n]+") do expected[#expected + 1] = name end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  good, wrong, bad_sent, bad_refused, sent = 0, 0, 0, 0, 0
  body = read(body_file)
  headers = {["Content-Type"] = kind}
  bad_request = wrk.format("POST", nil, {["Content-Type"] = "application/json"},
                           '{"images": [[1, 2]]}')
  good_request = wrk.format("POST", nil, headers, body)
end
-- Connections answer out of order: a 400 is a malformed request refused (only those
-- are sent malformed), any other answer must be a 200 with the expected classes.
-- "errors" are the connections' own (connect, read, write, timeout); an answer other
-- than 200 is counted as wrong here, not there.
function request()
  sent = sent + 1
  if bad_every > 0 and sent % bad_every == 0 then bad_sent = bad_sent + 1; return bad_request end
  return good_request
end
function response(status, headers, text)
  if status == 400 and bad_every > 0 then bad_refused = bad_refused + 1; return end
  if status ~= 200 then wrong = wrong + 1; return end
  local i = 0
  for name in text:gmatch('"class":%s*"([^"]*)"') do
    i = i + 1
    if name ~= expected[i] then wrong = wrong + 1; return end
  end
  if i ~= #expected then wrong = wrong + 1; return end
  good = good + 1
end
function done(summary, latency, requests)
  local totals = {good = 0, wrong = 0, bad_sent = 0, bad_refused = 0}
  for _, t in ipairs(threads) do
    for key, _ in pairs(totals) do totals[key] = totals[key] + t:get(key) end
  end
  io.write(string.format('RESULT {"requests": %d, "seconds": %.6f, "good": %d, "wrong": %d, ' ..
    '"bad_sent": %d, "bad_refused": %d, "errors": %d, "p50_ms": %.3f, "p95_ms": %.3f, ' ..
    '"p99_ms": %.3f}\n', summary.requests, summary.duration / 1e6, totals.good, totals.wrong,
    totals.bad_sent, totals.bad_refused,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3))
end
"""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(child) for child in children]
    return total / 1024


class Server:
    def __init__(self, name: str, command: list[str], ready_path: str, env=None) -> None:
        self.name, self.port = name, free_port()
        command = [part.replace("{port}", str(self.port)) for part in command]
        self.url = f"http://127.0.0.1:{self.port}"
        quiet = subprocess.DEVNULL
        self.process = subprocess.Popen(
            command, env=env, stdout=quiet, stderr=quiet, start_new_session=True
        )
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{name} exited with status {self.process.returncode}")
            try:
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"{name} was not ready within 180 s")

    def memory_mib(self) -> float:
        return tree_rss_mib(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def run_wrk(url: str, body: Path, kind: str, expected: Path, connections: int, seconds: float,
            script: Path, bad_every: int = 0) -> dict:  # fmt: skip
    env = {**os.environ, "BODY": str(body), "KIND": kind, "EXPECTED": str(expected),
           "BAD_EVERY": str(bad_every)}  # fmt: skip
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout",
               "10s", "-s", str(script), url]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def bodies(folder: Path, images: np.ndarray, classes: list[str]) -> dict:
    """Per batch size: the raw and JSON bodies and the expected classes."""
    made = {}
    for size in (1, 32):
        chosen = images[:size]
        raw, as_json = folder / f"raw-{size}.bin", folder / f"json-{size}.json"
        raw.write_bytes(np.ascontiguousarray(chosen, np.uint8).tobytes())
        as_json.write_text(json.dumps({"images": chosen.astype(int).tolist()}))
        mlflow = folder / f"mlflow-{size}.json"
        mlflow.write_text(json.dumps({"inputs": chosen.astype(int).tolist()}))
        expected = folder / f"expected-{size}.txt"
        expected.write_text("\n".join(classes[: len(chosen)]) + "\n")
        made[size] = {"raw": raw, "json": as_json, "mlflow": mlflow, "expected": expected}
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a best.pt (mlflow serves it)")
    parser.add_argument("--onnx", help="its ONNX export (default: exported here)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per row")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--quick", action="store_true", help="1 s per row, concurrency 1 and 8")
    parser.add_argument("--json-out")
    parser.add_argument("--markdown", help="write the table to this file")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.concurrency = 1.0, [1, 8]
    if shutil.which("wrk") is None:
        print("benchmark_serve: wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2

    import torch

    from mlptrain.artifacts.checkpoint import load_checkpoint
    from mlptrain.data.registry import find_source
    from mlptrain.data.splits import load_test_split
    from mlptrain.deploy.served_model import load_served_model
    from mlptrain.evaluation.evaluator import stored_config
    from mlptrain.tracking.mlflow import save_mlflow_model
    from mlptrain.training.runtime import describe_machine

    checkpoint = Path(args.checkpoint)
    stored = load_checkpoint(checkpoint)
    source = find_source(None, beside=REPO)
    given = stored["config"]["data"].get("source")  # a run on other files keeps its own
    settings = {"data.source": source} if source and not given else {}
    config = stored_config(stored, checkpoint, settings)
    test = load_test_split(config.data, torch.device("cpu"), stored["class_names"])
    images = test.images[:64].numpy()
    model = load_served_model([checkpoint])
    names = model.class_names
    classes = [names[i] for i in model.probabilities(images).argmax(axis=1)]
    report = {"machine": describe_machine(torch.device("cpu")), "checkpoint": str(checkpoint),
              "seconds_per_row": args.seconds, "rows": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        onnx = Path(args.onnx) if args.onnx else folder / "model.onnx"
        if not args.onnx:
            subprocess.run([sys.executable, "-m", "mlptrain.cli.export", "--checkpoint",
                            str(checkpoint), "--format", "onnx", "--out", str(onnx),
                            "--check-images", "200"], check=True, capture_output=True)  # fmt: skip
        save_mlflow_model(checkpoint, folder / "mlflow-model")
        script = folder / "load.lua"
        script.write_text(WRK_SCRIPT)
        made = bodies(folder, images, classes)
        bin_folder = os.path.dirname(sys.executable)
        env = {**os.environ, "PATH": bin_folder + os.pathsep + os.environ.get("PATH", "")}
        contestants = [
            ("mlp-serve (ONNX), raw uint8", [sys.executable, "-m", "mlptrain.cli.serve",
             str(onnx), "--port", "{port}"], "/health", "raw", "application/octet-stream"),
            ("mlp-serve (ONNX), JSON pixels", None, "/health", "json", "application/json"),
            ("mlflow models serve (pyfunc)", [sys.executable, "-m", "mlflow", "models", "serve",
             "-m", str(folder / "mlflow-model"), "--env-manager", "local", "--host", "127.0.0.1",
             "--port", "{port}"], "/ping", "mlflow", "application/json"),
        ]  # fmt: skip
        server = None
        for name, command, ready, body_key, kind in contestants:
            if command is not None:
                if server is not None:
                    server.stop()
                server = Server(name, command, ready, env)
                path = "/invocations" if "mlflow" in name else "/predict"
                warm = made[1]
                run_wrk(server.url + path, warm[body_key], kind, warm["expected"], 4, 1.0, script)
                warm_memory = server.memory_mib()
            for size in (1, 32):
                for connections in args.concurrency:
                    chosen = made[size]
                    result = run_wrk(
                        server.url + path, chosen[body_key], kind, chosen["expected"],
                        connections, args.seconds, script,
                    )  # fmt: skip
                    row = {"server": name, "images_per_request": size,
                           "concurrency": connections, **result,
                           "requests_per_second": result["requests"] / result["seconds"],
                           "images_per_second": result["good"] * size / result["seconds"],
                           "memory_warm_mib": warm_memory,
                           "memory_mib": server.memory_mib()}  # fmt: skip
                    report["rows"].append(row)
                    print(format_row(row), flush=True)
            if "mlp-serve" in name and body_key == "json":
                row = mixed_run(server, made[1], script, max(args.concurrency), args.seconds)
                row.update(memory_warm_mib=warm_memory)
                report["mixed"] = row
                print(
                    f"mixed, 1 in 10 malformed: {row['good']} good, {row['wrong']} wrong, "
                    f"{row['bad_refused']}/{row['bad_sent']} malformed refused with 400, "
                    f"memory {warm_memory:.0f} -> {row['memory_mib']:.0f} MiB", flush=True,
                )  # fmt: skip
        server.stop()
    table = markdown(report)
    print(table)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


def mixed_run(server: Server, chosen: dict, script: Path, connections: int, seconds: float):
    result = run_wrk(server.url + "/predict", chosen["json"], "application/json",
                     chosen["expected"], connections, seconds, script, bad_every=10)  # fmt: skip
    return {**result, "connections": connections, "memory_mib": server.memory_mib()}


def format_row(row: dict) -> str:
    return (
        f"{row['server']:<32} x{row['images_per_request']:<3} c{row['concurrency']:<3} "
        f"{row['requests_per_second']:8.0f} req/s {row['images_per_second']:9.0f} img/s  "
        f"p50 {row['p50_ms']:6.1f}  p95 {row['p95_ms']:6.1f}  p99 {row['p99_ms']:6.1f} ms  "
        f"wrong {row['wrong']} errors {row['errors']}  {row['memory_mib']:.0f} MiB"
    )


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [f"Machine: {machine['cpu']}, {machine['cpu_count']} cores; "
             f"{report['seconds_per_row']:g} s per row; load: wrk, 1 thread, closed loop.", "",
             "| server | images/request | concurrency | requests/s | images/s | p50 ms | "
             "p95 ms | p99 ms | requests | wrong or failed | memory MiB (warm → end) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for row in report["rows"]:
        lines.append(
            f"| {row['server']} | {row['images_per_request']} | {row['concurrency']} | "
            f"{row['requests_per_second']:,.0f} | {row['images_per_second']:,.0f} | "
            f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} | "
            f"{row['requests']:,} | {row['wrong'] + row['errors']} | "
            f"{row['memory_warm_mib']:.0f} → {row['memory_mib']:.0f} |"
        )
    mixed = report.get("mixed")
    if mixed:
        lines += ["", f"Mixed load on mlp-serve (JSON pixels, concurrency "
                  f"{mixed['connections']}, one request in ten malformed): {mixed['good']:,} "
                  f"correct answers, {mixed['wrong'] + mixed['errors']} wrong or failed, "
                  f"{mixed['bad_refused']:,} of {mixed['bad_sent']:,} malformed requests "
                  f"refused with 400, memory {mixed['memory_warm_mib']:.0f} → "
                  f"{mixed['memory_mib']:.0f} MiB."]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

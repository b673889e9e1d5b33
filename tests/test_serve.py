"""mlp-serve as users run it: a real server process on a free loopback port, real HTTP
requests, the same answers as mlp-predict, bad input refused with a 4xx naming what was
wrong (and the next request served), batching under load, SIGTERM drained."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mlptrain.cli.export import main as export_main
from mlptrain.cli.predict import main as predict_main

from .conftest import synthetic_images
from .servers import ServeProcess, free_port


@pytest.fixture(scope="module")
def server(checkpoint):
    with ServeProcess(str(checkpoint), "--max-body-mb", "0.05", "--max-images", "8") as process:
        yield process


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    images = synthetic_images(np.array([1, 4, 7]), np.random.default_rng(5))
    paths = []
    for number, pixels in enumerate(images):
        path = folder / f"image{number}.png"
        path.write_bytes(png(pixels))
        paths.append(path)
    # A dark-on-light photo-sized JPEG: resized and inverted as mlp-predict does.
    big = Image.fromarray(255 - images[0]).resize((200, 200), Image.Resampling.NEAREST)
    big.save(folder / "big.jpg", quality=95)
    return [*paths, folder / "big.jpg"]


def test_answers_equal_mlp_predict_for_the_same_files(server, checkpoint, image_files, capsys):
    files = [("files", (path.name, path.read_bytes())) for path in image_files]
    answer = httpx.post(f"{server.url}/predict", files=files, timeout=30).json()
    capsys.readouterr()
    assert predict_main(["--checkpoint", str(checkpoint), "--top-k", "10", "--jsonl",
                         *map(str, image_files)]) == 0  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(answer["predictions"]) == len(lines) == len(image_files)
    names = answer["classes"]
    for served, predicted in zip(answer["predictions"], lines, strict=True):
        assert served["class"] == predicted["top"][0]["class"] == names[served["index"]]
        for entry in predicted["top"]:  # mlp-predict rounds to 6 decimals
            assert served["probabilities"][entry["index"]] == pytest.approx(
                entry["probability"], abs=1e-6
            )
        assert sum(served["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_json_base64_pixels_and_raw_bodies_give_the_same_answers(server, image_files):
    path = image_files[0]
    pixels = np.asarray(Image.open(path).convert("L"))
    bodies = [
        {"files": {"f": (path.name, path.read_bytes())}},
        {"json": {"images": [base64.b64encode(path.read_bytes()).decode()]}},
        {"json": {"images": [pixels.tolist()]}},
        {"content": pixels.tobytes(), "headers": {"content-type": "application/octet-stream"}},
    ]
    answers = [httpx.post(f"{server.url}/predict", **body).json() for body in bodies]
    first = answers[0]["predictions"][0]["probabilities"]
    for answer in answers[1:]:
        assert answer["predictions"][0]["probabilities"] == pytest.approx(first, abs=1e-7)


BAD_REQUESTS = [
    ("not an image", {"files": {"f": ("a.png", b"hello, not a picture")}}, 400, "not an image"),
    ("truncated PNG", "truncated", 400, "truncated"),
    ("pixels of the wrong shape", {"json": {"images": [[[1, 2], [3, 4]]]}}, 400, "shape [2, 2]"),
    ("pixels above 255", {"json": {"images": [np.full((28, 28), 300).tolist()]}}, 400, "0-255"),
    ("negative pixels", {"json": {"images": [np.full((28, 28), -1).tolist()]}}, 400, "0-255"),
    ("an empty body", {"content": b"", "headers": {"content-type": "application/json"}}, 400,
     "empty"),
    ("JSON that is not an object", {"json": [1, 2]}, 400, '{"images"'),
    ("broken JSON", {"content": b"{", "headers": {"content-type": "application/json"}}, 400,
     "not valid JSON"),
    ("a raw body of the wrong length", {"content": b"x" * 100,
     "headers": {"content-type": "application/octet-stream"}}, 400, "multiple of 28 x 28"),
    ("a wrong content type", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415,
     "text/plain"),
    ("a body over --max-body-mb", {"content": bytes(784 * 80),
     "headers": {"content-type": "application/octet-stream"}}, 413, "larger than"),
    ("too many images", {"content": bytes(784 * 9),
     "headers": {"content-type": "application/octet-stream"}}, 413, "at most 8"),
    ("no image at all", {"json": {"images": []}}, 400, "no image"),
    ("a text field", {"data": {"note": "hi"}, "files": {"f": ("a.png", b"")}}, 400, "text"),
]  # fmt: skip


@pytest.mark.parametrize("request_", BAD_REQUESTS, ids=[bad[0] for bad in BAD_REQUESTS])
def test_bad_input_is_a_4xx_naming_it_and_the_server_goes_on(server, image_files, request_):
    _, body, status, words = request_
    if body == "truncated":
        body = {"files": {"f": ("a.png", image_files[0].read_bytes()[:60])}}
    answer = httpx.post(f"{server.url}/predict", **body, timeout=30)
    assert answer.status_code == status
    assert words in answer.json()["error"]
    assert "Traceback" not in answer.text
    good = {"f": (image_files[0].name, image_files[0].read_bytes())}
    assert httpx.post(f"{server.url}/predict", files=good).status_code == 200


def test_health_metadata_openapi_and_the_page(server, checkpoint):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ready"}
    meta = httpx.get(f"{server.url}/metadata").json()
    assert meta["image_size"] == [28, 28] and meta["engine"] == "torch"
    assert len(meta["class_names"]) == 10 and meta["dataset"] == "mnist"
    import hashlib

    assert meta["files"][0]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert meta["config"]["model"]["hidden"] == [32] and meta["normalization"]["std"] > 0
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert set(spec["paths"]) >= {"/predict", "/health", "/metadata"}
    assert "application/octet-stream" in spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<canvas" in page.text


def test_concurrent_requests_share_batches_and_a_lone_one_does_not_wait(checkpoint):
    pixels = np.zeros((1, 28, 28), dtype=np.uint8).tobytes()
    headers = {"content-type": "application/octet-stream"}
    with ServeProcess(str(checkpoint), "--max-wait-ms", "300", "--max-batch", "64") as server:
        with httpx.Client() as client:
            start = time.perf_counter()
            assert client.post(f"{server.url}/predict", content=pixels, headers=headers)
            alone = time.perf_counter() - start
        before = httpx.get(f"{server.url}/metadata").json()["served"]

        def one(_):
            return httpx.post(f"{server.url}/predict", content=pixels, headers=headers,
                              timeout=30).status_code  # fmt: skip

        with ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(one, range(96)))
        after = httpx.get(f"{server.url}/metadata").json()["served"]
    assert statuses == [200] * 96
    assert after["images"] - before["images"] == 96
    assert after["batches"] - before["batches"] < 96  # several requests per model call
    assert alone < 0.25  # not held for --max-wait-ms (300 ms) when nothing else arrives


def test_an_onnx_export_is_served_without_torch(checkpoint, tmp_path, image_files):
    model = tmp_path / "model.onnx"
    assert export_main(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(model),
                        "--check-images", "50"]) == 0  # fmt: skip
    files = {"f": (image_files[0].name, image_files[0].read_bytes())}
    with ServeProcess(str(checkpoint)) as torch_server:
        expected = httpx.post(f"{torch_server.url}/predict", files=files).json()
    with ServeProcess(str(model)) as server:
        assert httpx.get(f"{server.url}/metadata").json()["engine"] == "onnxruntime"
        answer = httpx.post(f"{server.url}/predict", files=files).json()
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "libtorch" not in maps  # the process never loaded torch
    assert answer["predictions"][0]["probabilities"] == pytest.approx(
        expected["predictions"][0]["probabilities"], abs=1e-5
    )


def test_a_model_that_cannot_be_loaded_is_exit_2_before_the_port_opens(tmp_path):
    broken = tmp_path / "best.pt"
    broken.write_bytes(b"not a checkpoint")
    port = free_port()
    for args, words in (([str(broken)], "not a readable mlptrain checkpoint"),
                        ([str(tmp_path / "missing.pt")], "does not exist"),
                        ([str(tmp_path)], "is a folder"),
                        (["--ensemble", str(broken)], "at least two")):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "mlptrain.cli.serve", *args, "--port",
                               str(port)], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")


def test_a_busy_port_is_exit_2(checkpoint):
    with ServeProcess(str(checkpoint)) as first:
        done = subprocess.run(
            [sys.executable, "-m", "mlptrain.cli.serve", str(checkpoint), "--port",
             str(first.port)], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2 and "cannot listen" in done.stderr


def test_sigterm_finishes_the_request_in_flight_then_exits_0(checkpoint):
    pixels = np.zeros((4, 28, 28), dtype=np.uint8).tobytes()
    server = ServeProcess(str(checkpoint))
    answer = {}

    def slow_body():  # the request is in flight while SIGTERM arrives
        yield pixels[:1000]
        time.sleep(1.5)
        yield pixels[1000:]

    def send():
        answer["response"] = httpx.post(
            f"{server.url}/predict", content=slow_body(),
            headers={"content-type": "application/octet-stream"}, timeout=30,
        )  # fmt: skip

    try:
        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.5)
        status, output = server.terminate()
        sender.join(timeout=30)
    finally:
        server.stop()
    assert status == 0, output
    assert answer["response"].status_code == 200
    assert len(answer["response"].json()["predictions"]) == 4


def test_workers_serve_from_several_processes_and_stop_on_sigterm(checkpoint):
    server = ServeProcess(str(checkpoint), "--workers", "2")
    try:
        pixels = np.zeros((1, 28, 28), dtype=np.uint8).tobytes()
        headers = {"content-type": "application/octet-stream"}
        for _ in range(4):
            assert httpx.post(f"{server.url}/predict", content=pixels, headers=headers)
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
        assert len(children.read_text().split()) >= 2  # the worker processes
        status, output = server.terminate()
    finally:
        server.stop()
    assert status == 0, output

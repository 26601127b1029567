"""Benchmark: the import pipeline end to end against the fastest standard tools run in sequence.

A 2 GiB qcow2 of random data is served from a local HTTP server (sendfile, 127.0.0.1, port 0).
Baseline: `curl -o`, then `openssl dgst -sha256`, then `qemu-img convert -O raw`, one after the
other. Ours: `submit_import` + a worker until the image is `available` (download hashed while it
streams, inspection, qemu-img info, convert, resize, re-inspection, publish), in a child process
whose peak memory (its own and its qemu-img children's) is reported.

imagehub's conversion writes with O_DIRECT (`-t none`) where the file system allows it;
`--baseline-direct` gives the baseline's qemu-img the same option, to separate that gain from the
one of hashing while streaming. Prints both times (best of `--rounds`), the ratio (target: at most
0.8) and peak memory (target: under 200 MB).
On a freshly booted VM, memory the guest never touched makes the first page-cache writes slow
(measured here: 2 GiB in 3.5 s the first time, 0.35 s after): both sides pay it at random, so
compare the best of several rounds.
Usage: `python bench/import.py [--size-gib 2] [--rounds 2] [--baseline-direct] [--workdir DIR]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.importer.diskprobe import mbr  # noqa: E402

SERVER = r"""
import http.server, os, sys
root = sys.argv[1]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        path = os.path.join(root, os.path.basename(self.path))
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(path, "rb") as f:
            self.wfile.flush()
            self.connection.sendfile(f)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

OURS = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from core.catalog import db
from core.rules.access import resolve_actor
from core.accounts.accounts import create_tenant
from core.setup.bootstrap import initialise
from core.jobs.worker import SingleJobWorker
from core.importer.submit import submit_import
from core.images.images import get_image
from core.catalog.settings import load_settings
settings = load_settings(sys.argv[2])
catalog, _ = initialise(settings)
with db.read_session(catalog.engine) as session:
    admin = resolve_actor(session, "admin")
create_tenant(catalog, admin, "bench")
start = time.monotonic()
view = submit_import(catalog, admin, name="bench", url=sys.argv[3], os_type="Linux", platform="CentOS",
                     arch="x86_64", os_version="7.9", size_gb=20, tenant="bench")
worker = SingleJobWorker(catalog, view["job_id"], poll_seconds=0.05)
worker.run_until(view["job_id"])
worker.join()
seconds = time.monotonic() - start
image = get_image(catalog, admin, view["id"])
print(json.dumps({
    "seconds": seconds,
    "status": image["status"],
    "error": image["error"],
    "sha256": image["sha256"],
    "maxrss_self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "maxrss_children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}))
"""


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def make_source(folder: Path, size_gib: int) -> Path:
    raw = folder / "random.raw"
    with open(raw, "wb") as handle:
        for _ in range(size_gib * 1024):
            handle.write(os.urandom(1 << 20))
        handle.seek(0)
        handle.write(mbr(size_gib << 30))  # an import requires a partition table (import.require_disk_structure)
    source = folder / "source.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(source))
    raw.unlink()
    return source


def baseline(url: str, folder: Path, direct: bool = False) -> tuple[float, str]:
    downloaded, converted = folder / "dl.qcow2", folder / "out.raw"
    start = time.monotonic()
    run("curl", "-sS", "-f", "-o", str(downloaded), url)
    digest = run("openssl", "dgst", "-sha256", "-r", str(downloaded)).split()[0]
    cache = ["-t", "none"] if direct else []
    run("qemu-img", "convert", *cache, "-f", "qcow2", "-O", "raw", str(downloaded), str(converted))
    seconds = time.monotonic() - start
    downloaded.unlink()
    converted.unlink()
    return seconds, digest


def ours(url: str, folder: Path, port: int) -> dict[str, object]:
    data = folder / "ours"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    config = data / "imagehub.toml"
    config.write_text(
        f'[storage]\ndata_dir = "var"\n[import]\nallow_private_networks = true\nallowed_ports = [{port}]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    out = subprocess.run(
        [sys.executable, "-c", OURS, str(REPO), str(config), url], check=True, capture_output=True, text=True, env=env
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    shutil.rmtree(data, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--baseline-direct",
        action="store_true",
        help="give the baseline's qemu-img convert `-t none` (O_DIRECT output) too, as imagehub uses",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="a folder on the disk to measure (default: /tmp)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="imagehub-bench-", dir=args.workdir))
    server = None
    try:
        print(f"making a {args.size_gib} GiB qcow2 of random data in {folder} ...", flush=True)
        source = make_source(folder, args.size_gib)
        expected = run("openssl", "dgst", "-sha256", "-r", str(source)).split()[0]
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(folder)], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/{source.name}"
        base_times, our_times, peaks = [], [], []
        for round_ in range(1, args.rounds + 1):
            seconds, digest = baseline(url, folder, args.baseline_direct)
            assert digest == expected, "baseline hashed something else"
            base_times.append(seconds)
            result = ours(url, folder, port)
            assert result["status"] == "available", result["error"]
            assert result["sha256"] == expected, "import hashed something else"
            our_times.append(float(result["seconds"]))  # type: ignore[arg-type]
            peak = max(int(result["maxrss_self_kib"]), int(result["maxrss_children_kib"]))  # type: ignore[call-overload]
            peaks.append(peak)
            print(
                f"round {round_}: curl+openssl+qemu-img {seconds:.2f} s, imagehub {our_times[-1]:.2f} s, "
                f"peak RSS {peak / 1024:.0f} MiB",
                flush=True,
            )
        best_base, best_ours = min(base_times), min(our_times)
        ratio = best_ours / best_base
        peak_mib = max(peaks) / 1024
        direct = " -t none" if args.baseline_direct else ""
        print(f"baseline (curl -o, openssl dgst -sha256, qemu-img convert{direct} -O raw): {best_base:.2f} s")
        print(f"imagehub import end to end: {best_ours:.2f} s")
        print(f"ratio: {ratio:.2f} (target <= 0.80) {'OK' if ratio <= 0.8 else 'MISSED'}")
        print(f"peak memory: {peak_mib:.0f} MiB (target < 200 MB) {'OK' if peak_mib * 1.048576 < 200 else 'MISSED'}")
        return 0 if ratio <= 0.8 and peak_mib * 1.048576 < 200 else 1
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

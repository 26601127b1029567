"""Uploads to the gateway against the reference servers, same file, same clients, same run, on 127.0.0.1.

- SFTP: OpenSSH `sftp -b` with `put FILE`, to `imagehub serve` (an upload link) and to OpenSSH's sshd
  with internal-sftp.
- FTP: `curl -T FILE` to `imagehub serve` (`ftp://TOKEN@127.0.0.1:PORT/`) and to vsftpd (anonymous
  upload into a folder of the temporary tree).
- HTTP: `curl -T FILE` to `imagehub serve` (`http://127.0.0.1:PORT/u/TOKEN/`) and to nginx
  (`dav_methods PUT`).
Each imagehub run has an upload link of its own (core.importer.upload.submit_upload, as `image import
--upload --bytes N` makes one). The time is the client's wall time until it exits 0; then the bytes
are checked (the import job queued with every byte, the staged source that long; the reference's
file that long) and removed. The import that would follow is not part of an upload's speed: the
gateway's worker takes no job here (`import.max_concurrent = 0`), so the queued imports stay queued.
The file is random data (64 MiB of it, repeated): no side can skip zeros.

Prints MB/s, the ratio imagehub/reference, the machine's load average (1 minute) when the row was
measured, and each server's CPU seconds per GB received (vsftpd's session processes leave nothing in
its times: not shown). Rows swing with other work on the machine: compare rows measured at a low
load, and use `--repeat` (reference and imagehub alternate; the best counts).
Then `--parallel` uploads at once to imagehub (one link each, the protocols mixed) and the gateway
process's peak resident memory (VmHWM, reset before) against its target.

Every server is started by this script on free ports in a temporary folder and stopped after (also on
Ctrl-C or SIGTERM), by PID.
Run: .venv/bin/python bench/upload.py [--size-mb 2048] [--repeat 3] [--parallel 20] [--only http,ftp]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any


def _load_gateway_bench() -> ModuleType:
    """bench/gateway.py (its server and timing helpers); `bench` is no package and `gateway` is the servers'."""
    spec = importlib.util.spec_from_file_location("bench_gateway", Path(__file__).with_name("gateway.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_gateway = _load_gateway_bench()  # also puts the repository on sys.path
REPO: Path = bench_gateway.REPO
MB = bench_gateway.MB
free_port: Callable[[], int] = bench_gateway.free_port
wait_port: Callable[[int], None] = bench_gateway.wait_port
tree_cpu: Callable[[int], tuple[float, int]] = bench_gateway.tree_cpu
settled_cpu: Callable[[int, int], float] = bench_gateway.settled_cpu
protocols: Callable[[str], tuple[str, ...]] = bench_gateway.protocols
PROTOCOLS: tuple[str, ...] = bench_gateway.PROTOCOLS

from core.accounts.accounts import create_tenant  # noqa: E402
from core.catalog import db  # noqa: E402
from core.catalog.catalog import Catalog  # noqa: E402
from core.catalog.models import Job  # noqa: E402
from core.catalog.settings import load_settings  # noqa: E402
from core.importer.upload import submit_upload  # noqa: E402
from core.jobs import jobs  # noqa: E402
from core.links import uploads  # noqa: E402
from core.rules.access import Actor, resolve_actor  # noqa: E402
from core.setup.bootstrap import initialise  # noqa: E402

MIB = 1 << 20
TARGETS = {"sftp": 0.8, "ftp": 0.9, "http": 0.9}
MEMORY_TARGET_MB = 200
SIZE_GB = 20  # the image's target size: a 20 GB target takes a source up to about 21 GiB


def make_file(path: Path, size: int) -> None:
    """`size` bytes of random data: 64 MiB of it, repeated (no zeros to skip, quick to make)."""
    block = os.urandom(min(size, 64 * MIB))
    with path.open("wb") as handle:
        left = size
        while left:
            handle.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    path.chmod(0o644)


class Processes(bench_gateway.Servers):  # type: ignore[misc]
    """Servers and clients this script started; whatever still runs is stopped by PID at the end."""

    def client(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        return self.start(cmd, log)  # type: ignore[no-any-return]

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        self.procs.remove(proc)


def run_clients(procs: Processes, commands: list[list[str]], logs: Path) -> tuple[float, list[str]]:
    """Run the clients at once; their wall time and, for each one that failed, its exit code and output."""
    started = time.monotonic()
    running = [procs.client(cmd, logs / f"client-{i}.log") for i, cmd in enumerate(commands)]
    codes = [p.wait() for p in running]
    elapsed = time.monotonic() - started
    for proc in running:
        procs.forget(proc)
    failures = [
        f"exit {code}: {(logs / f'client-{i}.log').read_text(errors='replace').strip()[-300:]}"
        for i, code in enumerate(codes)
        if code
    ]
    return elapsed, failures


@dataclass
class Imagehub:
    """The gateway under test: its catalog (this script's own), the admin who makes links, the process."""

    catalog: Catalog
    admin: Actor
    pid: int
    known: list[str]

    def new_upload(self, size: int) -> dict[str, Any]:
        """A fresh upload link for `size` bytes (the image view with `job_id` and `upload`)."""
        return submit_upload(
            self.catalog, self.admin, name="bench", size_bytes=size, os_type="Linux", arch="x86_64",
            platform="CentOS", os_version="7.9", size_gb=SIZE_GB, tenant="bench",
        )  # fmt: skip

    def arrived(self, view: dict[str, Any], size: int) -> str | None:
        """None when every byte arrived (the import job queued for all of them, the staged source that
        long); else what is wrong."""
        with db.read_session(self.catalog.engine) as session:
            job = session.get(Job, view["job_id"])
            assert job is not None
            state, done = job.state, job.bytes_done
        staged = self.catalog.store.import_staging(view["id"]) / uploads.SOURCE_NAME
        on_disk = staged.stat().st_size if staged.exists() else 0
        if state != jobs.QUEUED or done != size or on_disk != size:
            return f"job {state}, {done} bytes done, {on_disk} staged, expected {size}"
        return None

    def remove(self, view: dict[str, Any]) -> None:
        uploads.remove_staged(self.catalog, view["id"])

    def command(self, protocol: str, view: dict[str, Any], source: Path, batch: Path, ssh: list[str]) -> list[str]:
        link = view["upload"]
        if protocol == "sftp":
            token = link["ftp"].split("//", 1)[1].split("@", 1)[0]
            port = link["sftp"].rsplit(":", 1)[1].rstrip("/")
            batch.write_text(f"put {source}\n")
            auth = ["-o", "PreferredAuthentications=none,password"]
            return ["sftp", "-q", "-P", port, *self.known, *auth, *ssh, "-b", str(batch), f"{token}@127.0.0.1"]
        return ["curl", "-sS", "--fail", "-o", "/dev/null", "-T", str(source), link[protocol]]


@dataclass
class Reference:
    """nginx (PUT), vsftpd (anonymous STOR) and sshd (internal-sftp), each writing into a folder of its own."""

    folders: dict[str, Path]
    ports: dict[str, int]
    pids: dict[str, int]
    user: str
    key: Path
    known: list[str]

    def command(self, protocol: str, name: str, source: Path, batch: Path, ssh: list[str]) -> list[str]:
        port = self.ports[protocol]
        if protocol == "sftp":
            batch.write_text(f"put {source} {self.folders['sftp'] / name}\n")
            login = ["-i", str(self.key)]
            target = f"{self.user}@127.0.0.1"
            return ["sftp", "-q", "-P", str(port), *self.known, *login, *ssh, "-b", str(batch), target]
        url = {
            "ftp": f"ftp://anonymous:x@127.0.0.1:{port}/incoming/{name}",
            "http": f"http://127.0.0.1:{port}/put/{name}",
        }[protocol]
        return ["curl", "-sS", "--fail", "-o", "/dev/null", "-T", str(source), url]

    def arrived(self, protocol: str, name: str, size: int) -> str | None:
        path = self.folders[protocol] / name
        on_disk = path.stat().st_size if path.exists() else 0
        return None if on_disk == size else f"{on_disk} bytes arrived, expected {size}"

    def remove(self, protocol: str, name: str) -> None:
        (self.folders[protocol] / name).unlink(missing_ok=True)


# `--profile DIR`: `imagehub serve` with cProfile in every thread (the FTP loops, the executor's
# workers, the asyncio loop), one pstats file per thread, written as the thread ends.
PROFILED_SERVE = """
import cProfile, re, sys, threading
from pathlib import Path
out = Path(sys.argv[1])
original = threading.Thread.run
def run(self):
    profile = cProfile.Profile()
    profile.enable()
    try:
        original(self)
    finally:
        profile.disable()
        profile.dump_stats(out / (re.sub(r"[^\\w.-]", "_", self.name) + f"-{self.ident}.pstats"))
threading.Thread.run = run
from cli.main import main
profile = cProfile.Profile()
profile.enable()
try:
    code = main(["serve"])
finally:
    profile.disable()
    profile.dump_stats(out / "main.pstats")
sys.exit(code)
"""


def start_imagehub(work: Path, procs: Processes, profile: Path | None) -> Imagehub:
    config = work / "imagehub.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{work / "var"}"\n[gateway]\nhttp_port = 0\nftp_port = 0\nsftp_port = 0\n'
        f'ftp_passive_ports = ""\nmetrics_listen = "127.0.0.1:0"\nmax_connections_per_link = 8\n'
        # The worker claims no job: an upload's import (checksum, probe, conversion) is not its speed.
        f"[import]\nmax_concurrent = 0\n"
    )
    catalog, _ = initialise(load_settings(config))
    with db.read_session(catalog.engine) as session:
        admin = resolve_actor(session, "admin")
    create_tenant(catalog, admin, "bench")
    env = {**os.environ, "IMAGEHUB_CONFIG": str(config)}
    command = [sys.executable, "-m", "cli.main", "serve"]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-c", PROFILED_SERVE, str(profile.resolve())]
    serve = procs.start(command, work / "serve.log", env=env, cwd=REPO)
    deadline = time.monotonic() + 30
    while "imagehub serve: http=" not in (work / "serve.log").read_text():
        if serve.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((work / "serve.log").read_text())
        time.sleep(0.1)
    known = ["-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={work}/known_hosts", "-o", "BatchMode=yes"]
    return Imagehub(catalog, admin, serve.pid, known)


def start_reference(work: Path, procs: Processes) -> Reference:
    ref = work / "ref"  # the FTP root (not writable by the anonymous user, as vsftpd requires)
    folders = {"http": ref / "put", "ftp": ref / "incoming", "sftp": ref / "sftp"}
    ref.mkdir(mode=0o755)
    for folder in folders.values():
        folder.mkdir()
        folder.chmod(0o777)  # nginx's workers run as nobody, vsftpd's anonymous sessions as ftp
    ports = {"http": free_port(), "ftp": free_port(), "sftp": free_port()}

    (work / "nginx").mkdir()
    (work / "nginx.conf").write_text(
        textwrap.dedent(f"""
        daemon off; worker_processes 2; pid {work}/nginx/nginx.pid; error_log {work}/nginx/error.log;
        events {{ worker_connections 1024; }}
        http {{
          access_log off; client_max_body_size 0;
          client_body_temp_path {work}/nginx/body; proxy_temp_path {work}/nginx; fastcgi_temp_path {work}/nginx;
          uwsgi_temp_path {work}/nginx; scgi_temp_path {work}/nginx;
          server {{
            listen 127.0.0.1:{ports["http"]}; root {ref};
            location /put/ {{ dav_methods PUT; dav_access user:rw group:r all:r; }}
          }}
        }}
        """)
    )
    nginx = procs.start(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work / "nginx")], work / "nginx.log")

    (work / "vsftpd.conf").write_text(
        textwrap.dedent(f"""
        listen=YES
        listen_address=127.0.0.1
        listen_port={ports["ftp"]}
        background=NO
        anonymous_enable=YES
        no_anon_password=YES
        anon_root={ref}
        anon_upload_enable=YES
        anon_umask=022
        local_enable=NO
        write_enable=YES
        pasv_enable=YES
        pasv_address=127.0.0.1
        seccomp_sandbox=NO
        secure_chroot_dir=/var/run/vsftpd/empty
        xferlog_enable=NO
        max_clients=200
        max_per_ip=200
        """).lstrip()
    )
    vsftpd = procs.start(["vsftpd", str(work / "vsftpd.conf")], work / "vsftpd.log")

    sshd = bench_gateway.start_sshd(procs, work, ports["sftp"])
    for port in ports.values():
        wait_port(port)
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    known = ["-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={work}/known_hosts", "-o", "BatchMode=yes"]
    pids = {"http": nginx.pid, "ftp": vsftpd.pid, "sftp": sshd.pid}
    return Reference(folders, ports, pids, user, work / "client_key", known)


# (row, protocol, ssh options). The client's default cipher is chacha20-poly1305, which sshd takes and
# imagehub does not offer (the client then takes aes128-ctr with umac-64-etm): the second SFTP row
# gives both the same cipher.
CASES = [
    ("HTTP curl -T", "http", []),
    ("FTP curl -T", "ftp", []),
    ("SFTP default cipher", "sftp", []),
    ("SFTP aes128-gcm", "sftp", ["-o", "Ciphers=aes128-gcm@openssh.com"]),
]


def compare(
    args: argparse.Namespace, work: Path, procs: Processes, source: Path, ih: Imagehub | None, ref: Reference
) -> tuple[bool, list[str]]:
    """One row per protocol; whether any ratio is under its target, and the protocols imagehub took."""
    size = source.stat().st_size
    gigabytes = size / 1e9
    print(
        f"\n{'case':20} {'reference MB/s':>15} {'imagehub MB/s':>14} {'ratio':>6} {'target':>6} {'load':>5}"
        f" {'CPU s/GB ref':>12} {'imagehub':>8}",
        flush=True,
    )
    failed, working = False, []
    runs = 0
    for label, protocol, ssh in CASES:
        if protocol not in args.only:
            continue
        best = {"ref": float("inf"), "ih": float("inf")}
        cpu = {"ref": float("inf"), "ih": float("inf")}
        refused = ""
        for _ in range(args.repeat):
            for who in ("ref", "ih"):
                if who == "ih" and (ih is None or refused):
                    continue
                runs += 1
                batch = work / f"batch-{runs}"
                name = f"run-{runs}"
                view: dict[str, Any] = {}
                if who == "ref":
                    command = ref.command(protocol, name, source, batch, ssh)
                    pid = ref.pids[protocol]
                else:
                    assert ih is not None
                    view = ih.new_upload(size)
                    command = ih.command(protocol, view, source, batch, ssh)
                    pid = ih.pid
                os.sync()  # the previous run's writeback does not land in this one
                cpu_before, alive = tree_cpu(pid)
                elapsed, failures = run_clients(procs, [command], work)
                seconds = settled_cpu(pid, alive) - cpu_before
                if who == "ref":
                    wrong = failures[0] if failures else ref.arrived(protocol, name, size)
                    ref.remove(protocol, name)
                else:
                    assert ih is not None
                    wrong = failures[0] if failures else ih.arrived(view, size)
                    ih.remove(view)
                if wrong and who == "ref":
                    raise SystemExit(f"the reference {protocol} upload failed: {wrong}")
                if wrong:
                    refused = wrong
                    continue
                best[who] = min(best[who], elapsed)
                cpu[who] = min(cpu[who], seconds / gigabytes)
        rates = {who: size / MB / seconds for who, seconds in best.items()}
        target = TARGETS[protocol]
        ref_cpu = "-" if protocol == "ftp" else f"{cpu['ref']:.2f}"
        head = f"{label:20} {rates['ref']:>15.0f}"
        load = os.getloadavg()[0]
        if ih is None or refused:
            why = "not measured" if ih is None else f"imagehub failed: {refused}"
            print(f"{head} {'-':>14} {'-':>6} {target:>6.1f} {load:>5.1f} {ref_cpu:>12} {'-':>8}  {why}", flush=True)
            continue
        if protocol not in working:
            working.append(protocol)
        ratio = rates["ih"] / rates["ref"]
        failed |= ratio < target
        mark = "" if ratio >= target else "  below target"
        print(
            f"{head} {rates['ih']:>14.0f} {ratio:>6.2f} {target:>6.1f} {load:>5.1f} {ref_cpu:>12}"
            f" {cpu['ih']:>8.2f}{mark}",
            flush=True,
        )
    return failed, working


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def memory(args: argparse.Namespace, work: Path, procs: Processes, ih: Imagehub, mixed: list[str]) -> bool:
    """`--parallel` uploads at once, the protocols taking turns; the gateway's peak resident memory.
    Whether it is under the target."""
    size = min(args.parallel_mb, args.size_mb) * MIB
    source = work / "parallel.raw"
    make_file(source, size)
    views = [ih.new_upload(size) for _ in range(args.parallel)]
    commands = [
        ih.command(mixed[i % len(mixed)], view, source, work / f"batch-parallel-{i}", [])
        for i, view in enumerate(views)
    ]
    os.sync()
    before = vm_kib(ih.pid, "VmRSS")
    Path(f"/proc/{ih.pid}/clear_refs").write_text("5")  # VmHWM starts again from the current RSS
    sampled = [before]
    done = threading.Event()

    def sample() -> None:  # VmHWM is the kernel's own peak; this also shows how long it was held
        while not done.wait(0.05):
            sampled.append(vm_kib(ih.pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    elapsed, failures = run_clients(procs, commands, work)
    done.set()
    sampler.join()
    peak = vm_kib(ih.pid, "VmHWM")
    wrong = [w for view in views if (w := ih.arrived(view, size))]
    for view in views:
        ih.remove(view)
    kinds = "+".join(f"{sum(1 for i in range(args.parallel) if mixed[i % len(mixed)] == p)} {p}" for p in mixed)
    print(
        f"\n{args.parallel} uploads at once ({kinds}, {size // MIB} MiB each, {args.parallel * size / MB / elapsed:.0f}"
        f" MB/s in all): imagehub serve peak resident memory {peak / 1024:.0f} MB"
        f" (before {before / 1024:.0f} MB, sampled max {max(sampled) / 1024:.0f} MB; target < {MEMORY_TARGET_MB} MB)"
    )
    for failure in failures + wrong:
        print(f"  an upload failed: {failure}")
    return peak / 1024 < MEMORY_TARGET_MB and not failures and not wrong


def run(args: argparse.Namespace, work: Path, procs: Processes) -> int:
    size = args.size_mb * MIB
    source = work / "disk.raw"
    print(f"making {args.size_mb} MiB of random data in {work}", flush=True)
    make_file(source, size)
    ref = start_reference(work, procs)
    ih = None if args.reference_only else start_imagehub(work, procs, args.profile)
    failed, working = compare(args, work, procs, source, ih, ref)
    if ih is not None and args.parallel and working:
        failed |= not memory(args, work, procs, ih, working)
    if ih is not None:
        ih.catalog.dispose()
    return 1 if failed or not working else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2048, help="file size in MiB (default 2048)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per protocol, reference and imagehub alternating; the best counts"
    )
    parser.add_argument("--parallel", type=int, default=20, help="uploads at once for the memory check (0: none)")
    parser.add_argument(
        "--parallel-mb", type=int, default=256, help="size of each upload in the memory check, MiB (default 256)"
    )
    parser.add_argument(
        "--only",
        type=protocols,
        default=PROTOCOLS,
        help="comma-separated protocols to measure: http,ftp,sftp (default all; the memory check mixes them)",
    )
    parser.add_argument(
        "--profile", type=Path, help="run imagehub serve under cProfile, one pstats file per thread in this folder"
    )
    parser.add_argument("--reference-only", action="store_true", help="measure the reference servers only")
    args = parser.parse_args()
    for tool in ("curl", "sftp", "ssh-keygen", "nginx", "vsftpd", "/usr/sbin/sshd"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (Debian: nginx vsftpd openssh-server openssh-client curl)")

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # cleaned up as on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`&`)
    work = Path(tempfile.mkdtemp(prefix="imagehub-upbench-"))
    work.chmod(0o755)
    procs = Processes()
    try:
        return run(args, work, procs)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Download gateway against the reference servers, same file, same clients, same run, on 127.0.0.1.

- HTTP: curl from `imagehub serve` and from nginx (sendfile on).
- FTP: lftp from `imagehub serve` and from vsftpd (anonymous, sendfile).
- SFTP: OpenSSH `sftp` from `imagehub serve` and from OpenSSH's sshd with internal-sftp, with the
  client's default cipher and with aes128-gcm@openssh.com.
Each single stream and `--streams` parallel streams; prints MB/s, the ratio imagehub/reference and the
machine's load average (1 minute) when the row was measured: other work on the machine makes ratios
swing, so compare rows measured at a low load, and use `--repeat`. Beside them, each server's CPU
seconds per GB sent (the least of the runs; the reference's forked processes count once reaped).
The clients write to /dev/null, so that the servers are compared rather than this machine's disk
writeback (which made runs swing by +-0.2); `--to-disk` writes the files instead.
Then `--slow` concurrent rate-limited HTTP downloads held open, and the gateway's resident memory.

Every server is started by this script on free ports in a temporary folder and stopped after.
Run: .venv/bin/python bench/gateway.py [--size-mb 2048] [--streams 8] [--slow 100] [--only ftp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.accounts.accounts import create_tenant  # noqa: E402
from core.catalog import db  # noqa: E402
from core.catalog.settings import load_settings  # noqa: E402
from core.images.images import new_image  # noqa: E402
from core.jobs.worker import Worker  # noqa: E402
from core.links import links  # noqa: E402
from core.rules.access import resolve_actor  # noqa: E402
from core.setup.bootstrap import initialise  # noqa: E402

MB = 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


class Servers:
    """Processes this script started; stopped by PID, in reverse order."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: Path, **kwargs: object) -> subprocess.Popen[bytes]:
        handle = log.open("wb")
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
        handle.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def start_sshd(servers: Any, work: Path, port: int) -> subprocess.Popen[bytes]:
    """OpenSSH's sshd with internal-sftp only, on 127.0.0.1:`port`, started by `servers` (anything
    with `start(cmd, log)`); the current user logs in with `work/client_key`."""
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
    (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
    (work / "sshd_config").write_text(
        textwrap.dedent(f"""
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {work}/host_key
        PidFile {work}/sshd.pid
        AuthorizedKeysFile {work}/authorized_keys
        StrictModes no
        UsePAM no
        PasswordAuthentication no
        PermitRootLogin prohibit-password
        Subsystem sftp internal-sftp
        ForceCommand internal-sftp
        """).lstrip()
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    return servers.start(["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")], work / "sshd.log")


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 << 20))
            handle.write(chunk)
            left -= len(chunk)


def timed(commands: list[list[str]], cwd: Path) -> float:
    started = time.monotonic()
    procs = [subprocess.Popen(c, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for c in commands]
    codes = [p.wait() for p in procs]
    elapsed = time.monotonic() - started
    if any(codes):
        raise SystemExit(f"a client failed ({codes}): {commands[0]}")
    return elapsed


def tree_cpu(pid: int) -> tuple[float, int]:
    """CPU seconds of `pid` and its descendants (those alive, and those exited and reaped), and how
    many are alive: an exited process's time is in its parent's cutime/cstime once reaped."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            stats[int(entry.name)] = fields
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            tree.append(current)
            todo += [child for child, parent in parents.items() if parent == current]
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) + int(stats[p][13]) + int(stats[p][14]) for p in tree)
    return ticks / os.sysconf("SC_CLK_TCK"), len(tree)


def settled_cpu(pid: int, alive: int, timeout: float = 5) -> float:
    """tree_cpu once the processes a run forked have exited and been reaped (at most `timeout` s)."""
    deadline = time.monotonic() + timeout
    while True:
        seconds, count = tree_cpu(pid)
        if count <= alive or time.monotonic() > deadline:
            return seconds
        time.sleep(0.05)


def rss_mb(pid: int) -> float:
    total = 0
    for child in [pid]:
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


PROTOCOLS = ("http", "ftp", "sftp")


def protocols(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose among {','.join(PROTOCOLS)}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2048, help="file size in MiB (default 2048)")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--slow", type=int, default=100, help="concurrent slow downloads for the memory check")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per measurement, reference and imagehub alternating; the best counts",
    )
    parser.add_argument(
        "--to-disk", action="store_true", help="clients write the downloads to files (default: /dev/null)"
    )
    parser.add_argument(
        "--only",
        type=protocols,
        default=PROTOCOLS,
        help="comma-separated protocols to measure: http,ftp,sftp (default all; the memory check runs with http)",
    )
    args = parser.parse_args()
    for tool in ("curl", "lftp", "sftp", "ssh-keygen", "nginx", "vsftpd", "/usr/sbin/sshd"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (Debian: nginx vsftpd openssh-server openssh-client curl lftp)")

    work = Path(tempfile.mkdtemp(prefix="imagehub-bench-"))
    work.chmod(0o755)
    servers = Servers()
    try:
        return run(args, work, servers)
    finally:
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, servers: Servers) -> int:
    size = args.size_mb * 1024 * 1024
    public = work / "pub"
    public.mkdir()
    public.chmod(0o755)
    name = "disk.raw"
    print(f"making {args.size_mb} MiB of random data in {work}", flush=True)
    make_file(public / name, size)
    (public / name).chmod(0o644)
    downloads = work / "dl"
    downloads.mkdir()

    # imagehub: a catalog of its own, the file registered as an available raw image.
    config = work / "imagehub.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{work / "var"}"\n[gateway]\nhttp_port = 0\nftp_port = 0\nsftp_port = 0\n'
        f'ftp_passive_ports = ""\nmetrics_listen = "127.0.0.1:0"\n'
        f"max_connections_per_link = {max(8, args.streams) + args.slow}\n"
    )
    catalog, _ = initialise(load_settings(config))
    with db.read_session(catalog.engine) as session:
        admin = resolve_actor(session, "admin")
    create_tenant(catalog, admin, "bench")
    with db.write_session(catalog.engine) as session:
        from core.images.images import tenant_id_by_name

        image = new_image(
            session, admin, tenant_id_by_name(session, "bench"), name="bench", description="", os_type="Linux",
            platform="CentOS", os_version="7.9", arch="x86_64", status="available", target_size_gb=20,
            disk_format="raw", virtual_size=size,
        )  # fmt: skip
        image_id = image.id
    os.link(public / name, catalog.store.image_path(image_id, "raw"))
    created = links.create_link(catalog, admin, image_id, "raw")  # the stored file itself, as nginx serves it
    if created.job_id is not None:
        worker = Worker(catalog, kinds=["export"], max_concurrent=1, label="bench")
        worker.run_until(created.job_id)
        worker.join()
    env = {**os.environ, "IMAGEHUB_CONFIG": str(config)}
    serve = servers.start([sys.executable, "-m", "cli.main", "serve"], work / "serve.log", env=env, cwd=REPO)
    deadline = time.monotonic() + 30
    while "imagehub serve: http=" not in (work / "serve.log").read_text():
        if serve.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((work / "serve.log").read_text())
        time.sleep(0.1)
    view = links.describe(catalog, created.view["id"], created.token)
    token = created.token
    ih_ports = links.gateway_ports(catalog)

    # nginx, sendfile on.
    nginx_port = free_port()
    (work / "nginx").mkdir()
    (work / "nginx.conf").write_text(
        textwrap.dedent(f"""
        daemon off; worker_processes 2; pid {work}/nginx/nginx.pid; error_log {work}/nginx/error.log;
        events {{ worker_connections 1024; }}
        http {{
          access_log off; sendfile on; tcp_nopush on;
          client_body_temp_path {work}/nginx; proxy_temp_path {work}/nginx; fastcgi_temp_path {work}/nginx;
          uwsgi_temp_path {work}/nginx; scgi_temp_path {work}/nginx;
          server {{ listen 127.0.0.1:{nginx_port}; root {public}; }}
        }}
        """)
    )
    nginx = servers.start(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work / "nginx")], work / "nginx.log")

    # vsftpd, anonymous read-only, sendfile is its default.
    ftp_port = free_port()
    (work / "vsftpd.conf").write_text(
        textwrap.dedent(f"""
        listen=YES
        listen_address=127.0.0.1
        listen_port={ftp_port}
        background=NO
        anonymous_enable=YES
        no_anon_password=YES
        anon_root={public}
        local_enable=NO
        write_enable=NO
        pasv_enable=YES
        pasv_address=127.0.0.1
        seccomp_sandbox=NO
        secure_chroot_dir=/var/run/vsftpd/empty
        xferlog_enable=NO
        max_clients=200
        max_per_ip=200
        """).lstrip()
    )
    vsftpd = servers.start(["vsftpd", str(work / "vsftpd.conf")], work / "vsftpd.log")

    # OpenSSH sshd with internal-sftp, key login for the current user.
    ssh_port = free_port()
    sshd = start_sshd(servers, work, ssh_port)
    for port in (nginx_port, ftp_port, ssh_port):
        wait_port(port)

    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    known = ["-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={work}/known_hosts", "-o", "BatchMode=yes"]
    filename = view["filename"]

    def sink(out: str) -> str:
        return str(downloads / out) if args.to_disk else "/dev/null"

    def curl(url: str, out: str) -> list[str]:
        return ["curl", "-sS", "--fail", "-o", sink(out), url]

    def lftp(url: str, out: str) -> list[str]:
        settings = "set net:max-retries 1; set cmd:fail-exit yes; set xfer:clobber on"
        return ["lftp", "-c", f"{settings}; get {url} -o {sink(out)}"]

    def sftp(target: str, port: int, remote: str, out: str, extra: list[str]) -> list[str]:
        batch = work / f"batch-{out}"
        batch.write_text(f"get {remote} {sink(out)}\n")
        return ["sftp", "-q", "-P", str(port), *known, *extra, "-b", str(batch), target]

    gcm = ["-o", "Ciphers=aes128-gcm@openssh.com"]
    key = ["-i", str(work / "client_key")]
    cases: list[tuple[str, Callable[[str], list[str]], Callable[[str], list[str]], float]] = [
        ("HTTP curl", lambda o: curl(view["http"], o), lambda o: curl(f"http://127.0.0.1:{nginx_port}/{name}", o), 1.0),
        ("FTP lftp", lambda o: lftp(view["ftp"], o), lambda o: lftp(f"ftp://anonymous:x@127.0.0.1:{ftp_port}/{name}", o), 1.0),  # noqa: E501
        (
            "SFTP default cipher",
            lambda o: sftp(f"{token}@127.0.0.1", ih_ports["sftp"], filename, o, []),
            lambda o: sftp(f"{user}@127.0.0.1", ssh_port, str(public / name), o, key),
            1.0,
        ),
        (
            "SFTP aes128-gcm",
            lambda o: sftp(f"{token}@127.0.0.1", ih_ports["sftp"], filename, o, gcm),
            lambda o: sftp(f"{user}@127.0.0.1", ssh_port, str(public / name), o, key + gcm),
            1.0,
        ),
    ]  # fmt: skip

    # The server's CPU seconds per GB sent (its processes, and the ones it forked per connection):
    # less swayed by other work on the machine than MB/s.
    # vsftpd's session processes leave nothing in its times (0.00 s/GB measured): not shown.
    server_pids = {"HTTP": nginx.pid, "FTP": vsftpd.pid, "SFTP": sshd.pid}
    print(
        f"\n{'case':28} {'streams':>7} {'reference MB/s':>15} {'imagehub MB/s':>14} {'ratio':>6} {'target':>6}"
        f" {'load':>5} {'CPU s/GB ref':>12} {'imagehub':>8}"
    )
    failed = False
    for label, ours, theirs, target in cases:
        if label.split()[0].lower() not in args.only:
            continue
        pids = {"ref": server_pids[label.split()[0]], "ih": serve.pid}
        for streams in (1, args.streams):
            # Reference and imagehub alternate, so that a load change on the machine hits both.
            best = {"ref": float("inf"), "ih": float("inf")}
            cpu = {"ref": float("inf"), "ih": float("inf")}
            gigabytes = streams * size / 1e9
            for _ in range(args.repeat):
                for who, make in (("ref", theirs), ("ih", ours)):
                    commands = [make(f"{who}-{i}") for i in range(streams)]
                    cpu_before, alive = tree_cpu(pids[who])
                    best[who] = min(best[who], timed(commands, downloads))
                    cpu[who] = min(cpu[who], (settled_cpu(pids[who], alive) - cpu_before) / gigabytes)
                    for leftover in downloads.iterdir():
                        leftover.unlink()
            results = {who: streams * size / MB / seconds for who, seconds in best.items()}
            ratio = results["ih"] / results["ref"]
            failed |= ratio < target
            mark = "" if ratio >= target else "  below target"
            ref, ours_rate = results["ref"], results["ih"]
            ref_cpu = "-" if label.startswith("FTP") else f"{cpu['ref']:.2f}"
            print(
                f"{label:28} {streams:>7} {ref:>15.0f} {ours_rate:>14.0f} {ratio:>6.2f} {target:>6.1f}"
                f" {os.getloadavg()[0]:>5.1f} {ref_cpu:>12} {cpu['ih']:>8.2f}{mark}",
                flush=True,
            )

    if "http" not in args.only:
        catalog.dispose()
        return 1 if failed else 0

    # Many slow clients at once: resident memory of the gateway process.
    slow = [
        subprocess.Popen(
            ["curl", "-sS", "--limit-rate", "20k", "-o", "/dev/null", view["http"]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(args.slow)
    ]
    time.sleep(5)
    alive = sum(1 for p in slow if p.poll() is None)
    memory = rss_mb(serve.pid)
    for proc in slow:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait()
    print(f"\n{alive} concurrent slow HTTP downloads: imagehub serve resident memory {memory:.0f} MB (target < 200 MB)")
    failed |= memory >= 200
    catalog.dispose()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

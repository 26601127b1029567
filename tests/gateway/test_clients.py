"""Real clients, each download interrupted mid-way and resumed; the result must hash to the link's SHA-256.

The interruption is real: the client runs rate-limited until the partial file shows progress, then
gets SIGINT (as a user pressing Ctrl-C) and is resumed by the same client with its resume option.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.gateway.conftest import Gateway, Link, sha256_file

# Larger than loopback socket buffers and curl's first burst, so the interruption lands mid-file.
SIZE = 40 * 1024 * 1024 + 7
RATE = 256 * 1024


@pytest.fixture(scope="module")
def link(gw: Gateway) -> Link:
    return gw.link(gw.image(size=SIZE))


@pytest.fixture(autouse=True)
def _drop_downloads(tmp_path: Path) -> Iterator[None]:
    """Downloads are large: do not leave them in pytest's kept temporary folders."""
    yield
    for path in tmp_path.iterdir():
        if path.is_file():
            path.unlink()


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{cmd[0]} failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


def interrupt(
    cmd: list[str], cwd: Path, env: dict[str, str], started: Callable[[], bool], sig: int = signal.SIGINT
) -> None:
    """Run a rate-limited client until `started()` holds, then interrupt it like a user would."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while not started():
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[0]} ended before it was interrupted: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, f"{cmd[0]} made no progress"
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def grew(path: Path, at_least: int = 64 * 1024) -> Callable[[], bool]:
    return lambda: path.exists() and path.stat().st_size >= at_least


def partial(path: Path) -> None:
    size = path.stat().st_size if path.exists() else 0
    assert 0 < size < SIZE, f"interrupted download has {size} of {SIZE} bytes"


def env_for(gw: Gateway) -> dict[str, str]:
    env = gw.env
    env["LC_ALL"] = "C"
    return env


@pytest.mark.parametrize("proto", ["http", "ftp", "sftp"])
def test_curl_resumes_with_C_dash(gw: Gateway, link: Link, tmp_path: Path, proto: str) -> None:
    url = getattr(link, proto)
    out = tmp_path / link.filename
    base = ["curl", "-sS", "--fail", "-k", "-o", out.name]
    interrupt([*base, "--limit-rate", str(RATE), url], tmp_path, env_for(gw), grew(out))
    partial(out)
    run([*base, "-C", "-", url], tmp_path, env_for(gw))
    assert sha256_file(out) == link.sha256


@pytest.mark.parametrize("proto", ["http", "ftp"])
def test_wget_resumes_with_c(gw: Gateway, link: Link, tmp_path: Path, proto: str) -> None:
    url = getattr(link, proto)
    out = tmp_path / link.filename
    interrupt(["wget", "-q", f"--limit-rate={RATE}", url], tmp_path, env_for(gw), grew(out))
    partial(out)
    run(["wget", "-q", "-c", url], tmp_path, env_for(gw))
    assert sha256_file(out) == link.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == [link.filename]


def test_lftp_get_c_over_ftp(gw: Gateway, link: Link, tmp_path: Path) -> None:
    out = tmp_path / link.filename
    settings = "set net:max-retries 1; set cmd:fail-exit yes"
    interrupt(
        ["lftp", "-c", f"{settings}; set net:limit-rate {RATE}; get {link.ftp} -o {out.name}"],
        tmp_path,
        env_for(gw),
        grew(out),
    )
    partial(out)
    run(["lftp", "-c", f"{settings}; get -c {link.ftp} -o {out.name}"], tmp_path, env_for(gw))
    assert sha256_file(out) == link.sha256


def test_lftp_pget_n4_over_http(gw: Gateway, link: Link, tmp_path: Path) -> None:
    out = tmp_path / link.filename
    status = tmp_path / f"{link.filename}.lftp-pget-status"
    settings = "set net:max-retries 1; set cmd:fail-exit yes; set pget:save-status 0.1s"
    interrupt(
        ["lftp", "-c", f"{settings}; set net:limit-rate {RATE // 4}; pget -n 4 {link.http} -o {out.name}"],
        tmp_path,
        env_for(gw),
        lambda: status.exists() and "pos=" in status.read_text(errors="replace"),
    )
    assert status.exists()
    run(["lftp", "-c", f"{settings}; pget -n 4 -c {link.http} -o {out.name}"], tmp_path, env_for(gw))
    assert sha256_file(out) == link.sha256
    assert not status.exists()


def test_aria2c_x4_over_http(gw: Gateway, link: Link, tmp_path: Path) -> None:
    out = tmp_path / link.filename
    control = tmp_path / f"{link.filename}.aria2"
    base = ["aria2c", "-q", "-x", "4", "-s", "4", "--file-allocation=none", "-o", out.name]
    interrupt(
        [*base, f"--max-overall-download-limit={RATE}", link.http],
        tmp_path,
        env_for(gw),
        lambda: control.exists() and grew(out, 1)(),
    )
    assert control.exists()
    run([*base, "-c", link.http], tmp_path, env_for(gw))
    assert sha256_file(out) == link.sha256
    assert not control.exists()


def sftp_base(gw: Gateway, tmp_path: Path) -> list[str]:
    return [
        "sftp",
        "-o",
        f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
        "-o",
        "BatchMode=yes",
        "-P",
        str(gw.sftp),
    ]


def test_openssh_sftp_reget(gw: Gateway, link: Link, tmp_path: Path) -> None:
    out = tmp_path / link.filename
    batch = tmp_path / "batch"
    batch.write_text(f"get {link.filename} {out.name}\n")
    target = f"{link.token}@{gw.host}"
    base = [*sftp_base(gw, tmp_path), "-o", "StrictHostKeyChecking=accept-new"]
    interrupt([*base, "-l", str(RATE * 8 // 1000), "-b", str(batch), target], tmp_path, env_for(gw), grew(out))
    partial(out)
    batch.write_text(f"reget {link.filename} {out.name}\n")
    run([*base, "-b", str(batch), target], tmp_path, env_for(gw))
    assert sha256_file(out) == link.sha256


def test_sftp_command_from_the_link_runs_without_a_password(gw: Gateway, link: Link, tmp_path: Path) -> None:
    command = link.view["sftp_command"].split()
    assert command[0] == "sftp"
    # Same command; the test only keeps its known_hosts out of the real home and forbids prompts.
    cmd = [command[0], "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "BatchMode=yes", *command[1:]]
    run(cmd, tmp_path, env_for(gw))
    assert sha256_file(tmp_path / link.filename) == link.sha256


def test_qcow2_export_downloads_and_converts_back(gw: Gateway, tmp_path: Path) -> None:
    image_id = gw.image(size=2 * 1024 * 1024)
    raw = gw.link(image_id)
    qcow = gw.link(image_id, "qcow2")
    assert qcow.filename.endswith(".qcow2") and qcow.sha256 != raw.sha256
    out = tmp_path / qcow.filename
    run(["curl", "-sS", "--fail", "-o", out.name, qcow.http], tmp_path, env_for(gw))
    assert sha256_file(out) == qcow.sha256
    back = tmp_path / "back.raw"
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", out.name, back.name], tmp_path, env_for(gw))
    assert sha256_file(back) == raw.sha256
    exports_dir = gw.catalog.store.exports_dir
    assert (exports_dir / qcow.filename).exists()
    assert not [p for p in os.listdir(exports_dir) if p.endswith((".gz", ".br"))]

"""Several `imagehub serve` nodes sharing one PostgreSQL catalog and one data folder (issue: past one machine).

Three real server processes, each with its own config file (its own ports, as each host of a real
deployment has), the same `database.url` and the same `storage.data_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlmodel import select

from core.accounts.accounts import create_account, create_tenant
from core.catalog import audit, db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, Job
from core.catalog.settings import load_settings
from core.images.images import new_image
from core.jobs import jobs
from core.rules.access import resolve_actor
from core.setup.bootstrap import initialise
from tests.conftest import REPO
from tests.importkit import HttpBehaviour, http_server, make_disk, sha256_of

READY = re.compile(r"imagehub serve: http=[\d.]+:(\d+) ftp=[\d.]+:(\d+) sftp=[\d.]+:(\d+)")
LEASE_SECONDS = 3


@dataclass
class Node:
    name: str
    config: Path
    process: subprocess.Popen[str]
    http: int

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
        env["IMAGEHUB_CONFIG"] = str(self.config)
        return env

    def cli(self, *args: str, account: str = "acme-owner") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", "--as", account, *args], env=self.env(), cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    def url(self, link: dict) -> str:
        """The link's HTTP URL pointed at this node (a balancer would do the same)."""
        return re.sub(r":\d+/d/", f":{self.http}/d/", link["http"])


@dataclass
class Cluster:
    root: Path
    catalog: Catalog
    nodes: list[Node]


def write_node_config(root: Path, name: str, url: str, source_port: int) -> Path:
    """Ports 0: each node binds free ports and announces them (no race for ports picked in advance)."""
    config = root / f"{name}.toml"
    config.write_text(
        f'[storage]\ndata_dir = "shared"\n[database]\nurl = "{url}"\n'
        '[gateway]\nhost = "127.0.0.1"\nhttp_port = 0\nftp_port = 0\nsftp_port = 0\nftp_passive_ports = ""\n'
        'metrics_listen = "127.0.0.1:0"\n'
        f"[import]\nallow_private_networks = true\nmax_concurrent = 2\njob_lease_seconds = {LEASE_SECONDS}\n"
        f"allowed_ports = [{source_port}]\n"
        'local_roots = ["."]\n'
    )
    return config


def start_node(name: str, config: Path) -> Node:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env["IMAGEHUB_CONFIG"] = str(config)
    log = config.with_suffix(".log")
    with log.open("w") as errors:
        process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], env=env, cwd=REPO, text=True,
                                   stdout=subprocess.PIPE, stderr=errors)  # fmt: skip
    line = process.stdout.readline()
    ready = READY.search(line)
    assert ready, f"node {name} did not start: {line!r} {log.read_text()[-500:]}"
    return Node(name, config, process, int(ready.group(1)))


def stop_node(node: Node) -> None:
    if node.process.poll() is None:
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(30)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


@pytest.fixture
def source() -> Iterator[tuple[HttpBehaviour, str]]:
    """The HTTP server images are imported from (started first: the nodes' configs allow its port)."""
    behaviour = HttpBehaviour()
    with http_server(behaviour) as base:
        yield behaviour, base


@pytest.fixture
def cluster(tmp_path: Path, pg_cluster, source) -> Iterator[Cluster]:
    url = pg_cluster.url(pg_cluster.create_database())
    port = int(source[1].rsplit(":", 1)[1])
    names = ("node-a", "node-b", "node-c")
    configs = [write_node_config(tmp_path, name, url, port) for name in names]
    catalog, _ = initialise(load_settings(configs[0]))
    admin = resolve_actor_of(catalog, "admin")
    create_tenant(catalog, admin, "acme")
    create_account(catalog, admin, "acme-owner", tenant="acme", role="owner")
    nodes: list[Node] = []
    try:
        for config, name in zip(configs, names, strict=True):
            nodes.append(start_node(name, config))
        yield Cluster(tmp_path, catalog, nodes)
    finally:
        for node in nodes:
            stop_node(node)
        catalog.dispose()


def resolve_actor_of(catalog: Catalog, name: str):
    with db.read_session(catalog.engine) as session:
        return resolve_actor(session, name)


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    """Poll the catalog (another process changes it: there is no event to await here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def import_args(url: str, name: str) -> list[str]:
    return ["image", "import", "--name", name, "--url", url, "--os-type", "Linux", "--platform", "CentOS",
            "--arch", "x86_64", "--os-version", "7.9", "--size-gb", "20", "--json"]  # fmt: skip


def statuses(catalog: Catalog, ids: list[str]) -> dict[str, str]:
    with db.read_session(catalog.engine) as session:
        return {i: session.get(Image, i).status for i in ids}


def all_done(catalog: Catalog, ids: list[str]) -> bool:
    """Every image `available` and its job ended: the worker marks the image, then ends the job (and writes
    `job.finish`) in a later transaction, so a reader between the two sees an available image whose job runs."""
    if set(statuses(catalog, ids).values()) != {"available"}:
        return False
    return all(jobs.latest_for_image(catalog.engine, i).state == jobs.DONE for i in ids)


def test_twelve_imports_across_three_nodes_each_job_held_by_one_worker_at_a_time(cluster: Cluster, source):
    disk = make_disk(cluster.root, "qcow2", "32M")
    behaviour, base = source
    behaviour.files.update({f"/disk{n}.qcow2": disk for n in range(12)})
    ids = []
    for n in range(12):
        done = cluster.nodes[n % 3].cli(*import_args(f"{base}/disk{n}.qcow2", f"img-{n}"))
        assert done.returncode == 0, done.stderr
        ids.append(json.loads(done.stdout)["id"])
    wait_for(lambda: all_done(cluster.catalog, ids), 180, "12 imports")
    # oldest first: every claim of a job must follow the end (or lease loss) of the previous one
    trail = audit.list_events(cluster.catalog.engine, limit=10000)
    events = [e for e in reversed(trail) if e["action"] in ("job.claim", "job.finish")]
    holders: dict[int, str | None] = {}
    owners = set()
    for event in events:
        job_id = event["detail"]["job"]
        if event["action"] == "job.claim":
            assert holders.get(job_id) is None, f"job {job_id} claimed while {holders[job_id]} held it"
            holders[job_id] = event["actor"]
            owners.add(event["actor"].rsplit(":", 1)[0])
        else:
            assert holders.get(job_id) == event["actor"]
            holders[job_id] = None
    assert len(holders) == 12 and all(v is None for v in holders.values())
    assert len(owners) >= 2, "the work was spread over the nodes"


def test_a_node_killed_mid_download_hands_the_job_to_another_that_resumes(cluster: Cluster, source):
    disk = make_disk(cluster.root, "qcow2", "64M", pattern=True)
    big = cluster.root / "big.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk), str(big)], check=True)
    with big.open("r+b") as handle:  # data all through (after the MBR), so the download takes bytes, not holes
        for offset in range(1 << 20, 64 << 20, 1 << 20):
            handle.seek(offset)
            handle.write(hashlib.sha256(str(offset).encode()).digest() * 64)
    held_at = 8 << 20
    behaviour, base = source
    behaviour.files["/big.raw"] = big
    behaviour.hold_after = held_at
    done = cluster.nodes[0].cli(*import_args(f"{base}/big.raw", "resumed"))
    image_id = json.loads(done.stdout)["id"]
    assert behaviour.reached.wait(60), "the download never started"
    with db.read_session(cluster.catalog.engine) as session:
        job = session.exec(select(Job).where(Job.image_id == image_id)).one()
    holder_pid = int(job.lease_owner.split(":")[1])
    victim = next(n for n in cluster.nodes if n.process.pid == holder_pid)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    behaviour.release.set()
    wait_for(lambda: all_done(cluster.catalog, [image_id]), 120, "the takeover")
    ranges = [r["range"] for r in behaviour.requests if r["path"] == "/big.raw"]
    assert ranges[0] is None and len(ranges) == 2
    resumed_from = int(re.fullmatch(r"bytes=(\d+)-", ranges[1]).group(1))
    assert resumed_from >= held_at // 2, "the second node re-fetched from the bytes already on disk"
    finished = jobs.latest_for_image(cluster.catalog.engine, image_id)
    assert finished.state == jobs.DONE and finished.attempts == 2
    claims = [e for e in audit.list_events(cluster.catalog.engine, target=image_id, action="job.claim")]
    assert len(claims) == 2 and f":{holder_pid}:" not in claims[0]["actor"]  # newest first: the survivor
    with db.read_session(cluster.catalog.engine) as session:
        assert session.get(Image, image_id).sha256 == sha256_of(big)


def _curl(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--fail", "-C", "-", "-o", str(out), *extra, url], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def _available_image(cluster: Cluster, name: str) -> tuple[str, Path]:
    """An `available` image with a small raw file (imports make 20 GiB ones: too big to download in a test)."""
    owner = resolve_actor_of(cluster.catalog, "acme-owner")
    with db.write_session(cluster.catalog.engine) as session:
        image = new_image(session, owner, owner.tenant_id, name=name, description="", os_type="Linux",
                          platform="CentOS", os_version="7.9", arch="x86_64", status="available",
                          target_size_gb=20, disk_format="raw", virtual_size=4 << 20)  # fmt: skip
        image_id = image.id
    path = cluster.catalog.store.image_path(image_id, "raw")
    with path.open("wb") as handle:
        for block in range(64):
            handle.write(hashlib.sha256(f"{name}{block}".encode()).digest() * 2048)
    return image_id, path


def test_a_link_made_on_one_node_works_on_all_and_a_revocation_anywhere_stops_all(cluster: Cluster):
    a, b, c = cluster.nodes
    image_id, _ = _available_image(cluster, "shared-link")
    made = a.cli("image", "download-link", image_id, "--json")
    assert made.returncode == 0, made.stderr
    link = json.loads(made.stdout)
    for node in (b, c):
        out = cluster.root / f"from-{node.name}.part"
        # start with a piece, then resume with `curl -C -` from the other node
        assert _curl(node.url(link), out, "-r", "0-999999").returncode == 0
        resumed = _curl(node.url(link), out)
        assert resumed.returncode == 0, resumed.stderr
        assert sha256_of(out) == link["sha256"]
    assert b.cli("link", "revoke", link["id"]).returncode == 0
    started = time.monotonic()
    for node in (a, c):
        refused = _curl(node.url(link), cluster.root / f"after-{node.name}")
        assert refused.returncode != 0 and "403" in refused.stderr
    assert time.monotonic() - started < 5


def test_two_nodes_exporting_the_same_qcow2_make_one_file(cluster: Cluster):
    a, b, _ = cluster.nodes
    image_id, raw = _available_image(cluster, "exported")
    results = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "--as",
                "acme-owner",
                "image",
                "download-link",
                image_id,
                "--format",
                "qcow2",
                "--json",
            ],
            env=node.env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (a, b)
    ]
    outputs = [p.communicate(timeout=180) for p in results]
    assert all(p.returncode == 0 for p in results), [o[1] for o in outputs]
    first, second = (json.loads(o[0]) for o in outputs)
    assert first["sha256"] == second["sha256"]
    exports = [p for p in cluster.catalog.store.exports_dir.iterdir() if p.name.startswith(image_id)]
    assert [p.name for p in exports if p.suffix == ".qcow2"] == [f"{image_id}.qcow2"]
    downloads = []
    for node, link in ((a, first), (b, second)):
        out = cluster.root / f"{node.name}.qcow2"
        assert _curl(node.url(link), out).returncode == 0
        downloads.append(sha256_of(out))
    assert downloads[0] == downloads[1] == first["sha256"]
    assert first["filename"] == f"{image_id}.qcow2"
    assert raw.exists()


def test_an_upload_cut_on_one_node_is_resumed_on_another(cluster: Cluster):
    """curl -T to node A, cut partway; node B answers the offset (the bytes on the shared disk), takes
    the rest (hashing what A wrote once) and the import's checksum is the file's."""
    from tests.gateway.uploadkit import make_disk

    a, b, _ = cluster.nodes
    disk = make_disk(cluster.root / "upload.qcow2", 24)
    made = a.cli("image", "import", "--upload", "--bytes", str(disk.stat().st_size), "--name", "uploaded",
                 "--os-type", "Linux", "--platform", "CentOS", "--arch", "x86_64", "--os-version", "7.9",
                 "--size-gb", "20", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    image = json.loads(made.stdout)
    url = image["upload"]["http"]
    staged = cluster.catalog.store.import_staging(image["id"]) / "source"
    on_a = re.sub(r":\d+/u/", f":{a.http}/u/", url)
    on_b = re.sub(r":\d+/u/", f":{b.http}/u/", url)
    client = subprocess.Popen(["curl", "-sS", "-T", str(disk), "--limit-rate", "2M", on_a],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: staged.exists() and staged.stat().st_size >= 4 << 20, 60, "the first bytes on node A")
    finally:
        client.kill()
        client.wait()
    head = subprocess.run(["curl", "-sSI", on_b], capture_output=True, text=True, timeout=30)
    offset = int(re.search(r"(?im)^upload-offset:\s*(\d+)", head.stdout).group(1))
    assert 4 << 20 <= offset < disk.stat().st_size
    done = subprocess.run(["curl", "-sS", "--fail", "-C", str(offset), "-T", str(disk), on_b], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: statuses(cluster.catalog, [image["id"]])[image["id"]] != "importing", 120, "the import")
    with db.read_session(cluster.catalog.engine) as session:
        row = session.get(Image, image["id"])
        assert (row.status, row.sha256) == ("available", sha256_of(disk)), row.error

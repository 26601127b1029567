"""`imagehub image import`: options, --wait (a local worker, or following a running server's), --json,
progress on a terminal, exit statuses."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.models import Image, Job
from core.jobs import jobs
from core.jobs.worker import Worker
from tests.conftest import IMAGEHUB, REPO, People
from tests.importkit import (
    GIB,
    HttpBehaviour,
    free_ports,
    ftp_server,
    http_server,
    leftovers,
    make_disk,
    port_of,
    run_job,
    sha256_of,
)

OS_ARGS = ["--os-type", "Linux", "--arch", "x86_64", "--platform", "CentOS", "--os-version", "7.9"]


def import_args(*source: str, size: str = "20", extra: tuple[str, ...] = ()) -> list[str]:
    return ["image", "import", "--name", "web", *source, *OS_ARGS, "--size-gb", size, "--tenant", "acme", *extra]


def env_for(config_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHUB_")}
    env["IMAGEHUB_CONFIG"] = str(config_path)
    env.update(settings)
    return env


def cli_json(config_path: Path, *args: str) -> Any:
    done = subprocess.run(
        [*IMAGEHUB, *args], capture_output=True, text=True, env=env_for(config_path), cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def first_job(catalog: Catalog) -> Job | None:
    with db.read_session(catalog.engine) as session:
        return session.exec(select(Job)).first()


def test_import_file_with_wait_and_json(cli: Any, people: People, tmp_path: Path) -> None:
    disk = make_disk(tmp_path, "qcow2")
    done = cli(*import_args("--file", str(disk), extra=("--wait", "--json")))
    assert done.code == 0, done.err
    image = done.json()
    assert image["status"] == "available"
    assert image["disk_format"] == "raw"
    assert image["virtual_size"] == 20 * GIB
    assert image["sha256"] == sha256_of(disk)
    assert image["tenant"] == "acme" and isinstance(image["job_id"], int)
    assert "\r" not in done.err  # no terminal: plain lines only
    shown = cli("image", "show", image["id"], "--json").json()
    assert shown["status"] == "available" and shown["progress"] is None


def test_failed_import_with_wait_exits_1_with_the_reason(cli: Any, people: People, tmp_path: Path) -> None:
    disk = make_disk(tmp_path, "qed", pattern=False)
    done = cli(*import_args("--file", str(disk), extra=("--wait",)))
    assert done.code == 1
    assert done.err.strip().endswith("failed: QED images are refused")
    image_id = done.err.split("import of ", 1)[1].split()[0]
    shown = cli("image", "show", image_id, "--json").json()
    assert shown["status"] == "import_failed" and shown["error"] == "QED images are refused"
    deleted = cli("image", "delete", image_id)
    assert deleted.code == 0, deleted.err


def test_wait_exits_1_for_every_failed_import_a_running_server_does(
    catalog: Catalog, people: People, config_path: Path, tmp_path: Path
) -> None:
    """The server's worker marks the job failed, then the image: --wait must never report the gap as
    "importing ... exit 0" (it did about 1 run in 4)."""
    disk = make_disk(tmp_path, "qed", pattern=False)  # refused at inspection: fails fast
    (catalog.settings.data_dir / "serve.pid").write_text(f"{os.getpid()}\n")  # "a server runs"
    server = Worker(catalog, kinds=["import"], poll_seconds=0.01)
    thread = threading.Thread(target=server.run_forever, daemon=True)
    busy = threading.Event()

    def other_writers() -> None:
        """Another writer that takes the catalog as soon as a job has failed (a loaded server): the
        worker then waits its turn to record the failure on the image."""
        database = sqlite3.connect(str(catalog.engine.url.database), isolation_level=None, timeout=30)
        seen: set[int] = set()
        while not busy.is_set():
            row = database.execute("SELECT id FROM job WHERE state = 'failed' ORDER BY id DESC LIMIT 1").fetchone()
            if row is not None and row[0] not in seen:
                seen.add(row[0])
                database.execute("BEGIN IMMEDIATE")
                busy.wait(1.0)
                database.execute("COMMIT")
            busy.wait(0.001)
        database.close()

    load = threading.Thread(target=other_writers, daemon=True)
    thread.start()
    load.start()
    try:
        for attempt in range(20):
            done = subprocess.run(
                [*IMAGEHUB, *import_args("--file", str(disk), extra=("--wait",))],
                capture_output=True,
                text=True,
                env=env_for(config_path),
                cwd=REPO,
                timeout=60,
            )
            assert done.returncode == 1, f"run {attempt}: {done.stdout}{done.stderr}"
            assert done.stderr.strip().endswith("failed: QED images are refused"), f"run {attempt}: {done.stderr}"
            assert "importing" not in done.stdout
    finally:
        busy.set()
        load.join(30)
        server.stop.set()
        server.wake()
        thread.join(30)
    images = cli_json(config_path, "image", "list", "--json")
    assert len(images) == 20
    assert {(i["status"], i["error"]) for i in images} == {("import_failed", "QED images are refused")}
    assert leftovers(catalog) == []


def test_import_without_wait_leaves_the_job_queued(cli: Any, people: People, tmp_path: Path) -> None:
    disk = make_disk(tmp_path, "qcow2")
    done = cli(*import_args("--file", str(disk)))
    assert done.code == 0, done.err
    assert "importing (job " in done.out
    image_id = done.out.split(":", 1)[0]
    shown = cli("image", "show", image_id, "--json").json()
    assert shown["status"] == "importing"
    assert shown["progress"]["state"] == "queued"
    assert cli("image", "delete", image_id).code == 5  # not while importing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (import_args("--file", "/nonexistent.qcow2"), "file /nonexistent.qcow2 is not in an import folder"),
        (import_args("--file", "/etc/hostname"), "file /etc/hostname is not in an import folder"),
        (import_args("--file", "missing.qcow2"), "file missing.qcow2 does not exist"),
        (import_args("--file", "/etc/hostname", size="10"), "size (GB) 10 is out of range"),
        (import_args("--file", "/etc/hostname", size="501"), "size (GB) 501 is out of range"),
        (import_args("--url", "file:///etc/passwd"), "url scheme file is not allowed"),
        (import_args("--url", "http://169.254.169.254/latest/"), "source refused by the network policy"),
        (import_args("--file", "/etc/hostname", extra=("--sha256", "abc")), "sha256 must be 64 hexadecimal digits"),
        (
            ["image", "import", "--name", "x", "--file", "a", "--url", "http://h/", *OS_ARGS, "--size-gb", "20"],
            "not allowed with argument",
        ),
        (["image", "import", "--name", "x", *OS_ARGS, "--size-gb", "20"], "one of the arguments --file --url"),
        (
            ["image", "import", "--name", "x", "--file", "a", *OS_ARGS[:-2], "--size-gb", "20"],
            "error: OS version is required (--os-version)",
        ),
        (
            ["image", "import", "--name", "x", "--file", "a", *OS_ARGS[:-2]],
            "error: OS version and size (GB) are required (--os-version, --size-gb)",
        ),
        (import_args("--file", "/etc/hostname", size="big"), "size (GB) must be a whole number from 20 to 500"),
        (
            ["image", "import", "--name", "x", "--file", "a", *OS_ARGS[:-1], "", "--size-gb", "20"],
            "OS version is required; choose one of 6.5, 6.6",
        ),
    ],
)
def test_bad_values_exit_2_and_create_nothing(cli: Any, people: People, args: list[str], message: str) -> None:
    done = cli(*args, env={"IMAGEHUB_IMPORT__ALLOW_PRIVATE_NETWORKS": "false"})
    assert done.code == 2
    assert message in done.err and len(done.err.strip().splitlines()) == 1
    assert cli("image", "list", "--json").json() == []


def test_url_credentials_from_stdin_are_never_shown(people: People, config_path: Path, tmp_path: Path) -> None:
    disk = make_disk(tmp_path, "qcow2")
    passive = free_ports()
    with ftp_server(disk.parent, "alice", "hunter2", passive_ports=passive) as (base, _):
        url = f"ftp://alice:hunter2@{base.removeprefix('ftp://')}/{disk.name}"
        env = env_for(config_path, IMAGEHUB_IMPORT__ALLOWED_PORTS=json.dumps([port_of(base), *passive]))
        done = subprocess.run(
            [*IMAGEHUB, *import_args("--url", "-", extra=("--wait", "--json"))],
            input=url + "\n",
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    image = json.loads(done.stdout)
    assert image["status"] == "available"
    assert image["source"] == f"ftp://alice:***@{base.removeprefix('ftp://')}/{disk.name}"
    assert "hunter2" not in done.stdout + done.stderr


def test_u7_signed_url_query_is_used_but_never_shown_or_stored(
    cli: Any, catalog: Catalog, people: People, config_path: Path, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path, "qcow2")
    signature = "X-Amz-Signature=5ecret5ig&X-Amz-Credential=AKIA1234"
    behaviour = HttpBehaviour(files={f"/disk.qcow2?{signature}": disk})  # served only with the signature
    with http_server(behaviour) as base:
        port_env = {"IMAGEHUB_IMPORT__ALLOWED_PORTS": f"[{port_of(base)}]"}
        done = cli(*import_args("--url", f"{base}/disk.qcow2?{signature}", extra=("--wait", "--json")), env=port_env)
        assert done.code == 0, done.err
        image = done.json()
        assert image["status"] == "available"
        assert [r["path"] for r in behaviour.requests] == [f"/disk.qcow2?{signature}"]
        shown = [
            done.out + done.err,
            cli("image", "show", image["id"], "--json").out,
            cli("image", "show", image["id"]).out,
            cli("image", "list", "--json").out,
            cli("audit", "list", "--json", account="admin").out,
            cli("audit", "list", account="admin").out,
        ]
        refused = cli(*import_args("--url", f"{base}:99/disk.qcow2?{signature}"), env=port_env)
    assert image["source"] == f"{base}/disk.qcow2?***"
    assert refused.code == 2 and refused.err.strip().endswith(f"url is not valid: {base}:99/disk.qcow2?***")
    shown.append(refused.out + refused.err + cli("audit", "list", "--json", account="admin").out)
    with db.read_session(catalog.engine) as session:
        job = session.exec(select(Job)).one()
        assert json.loads(job.params)["url"] == f"{base}/disk.qcow2?***" and job.secret  # sealed for the worker
    for text in shown:
        assert "5ecret5ig" not in text and "AKIA1234" not in text, text
    for path in (catalog.settings.data_dir).rglob("catalog*"):
        assert b"5ecret5ig" not in path.read_bytes(), path  # not in the database file, nor its WAL


def test_u7_a_source_stored_before_query_redaction_is_shown_redacted(
    cli: Any, catalog: Catalog, people: People, tmp_path: Path
) -> None:
    image_id = cli(*import_args("--file", str(make_disk(tmp_path, "qcow2")), extra=("--json",))).json()["id"]
    with db.write_session(catalog.engine) as session:  # as an older version stored it
        image = session.get(Image, image_id)
        assert image is not None
        image.source = "https://u:pw@bucket.example.com/x.qcow2?X-Amz-Signature=5ecret5ig#frag"
        session.add(image)
    shown = cli("image", "show", image_id, "--json").json()
    assert shown["source"] == "https://u:***@bucket.example.com/x.qcow2?***#***"
    listed = cli("image", "list", "--json").out + cli("image", "show", image_id).out
    assert "5ecret5ig" not in listed and ":pw@" not in listed


def test_wait_shows_a_progress_bar_on_a_terminal(people: People, config_path: Path, tmp_path: Path) -> None:
    disk = make_disk(tmp_path, "qcow2", "64M", options="preallocation=full")
    behaviour = HttpBehaviour(files={"/disk.qcow2": disk}, hold_after=8 << 20)
    with http_server(behaviour) as base:
        env = env_for(config_path, IMAGEHUB_IMPORT__ALLOWED_PORTS=f"[{port_of(base)}]")
        child = pexpect.spawn(
            sys.executable,
            ["-m", "cli.main", *import_args("--url", f"{base}/disk.qcow2", extra=("--wait",))],
            env=env,
            cwd=str(REPO),
            timeout=60,
            encoding="utf-8",
            dimensions=(24, 120),
        )
        try:
            assert behaviour.reached.wait(30)
            child.expect(r"\[#*-+\] +\d+% downloading +\d")
            behaviour.release.set()
            child.expect(r"available \(raw, 20 GB")
            child.expect(pexpect.EOF)
        finally:
            child.close()
    assert child.exitstatus == 0


def test_wait_only_follows_a_job_that_a_running_server_does(
    catalog: Catalog, people: People, config_path: Path, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path, "qcow2")
    (catalog.settings.data_dir / "serve.pid").write_text(f"{os.getpid()}\n")  # "a server runs"
    waiting = subprocess.Popen(
        [*IMAGEHUB, *import_args("--file", str(disk), extra=("--wait", "--json"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(config_path),
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while (job := first_job(catalog)) is None:
            assert time.monotonic() < deadline and waiting.poll() is None
            time.sleep(0.05)
        assert job.state == jobs.QUEUED  # the CLI did not take it
        run_job(catalog, job.id or 0)  # the "server's" worker
        out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err
    assert json.loads(out)["status"] == "available"
    finished = jobs.get(catalog.engine, job.id or 0)
    assert finished is not None and finished.lease_owner and finished.lease_owner.startswith("worker@")


def test_image_show_reports_the_progress_of_a_running_import(
    cli: Any, catalog: Catalog, people: People, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path, "qcow2", "64M", options="preallocation=full")
    behaviour = HttpBehaviour(files={"/disk.qcow2": disk}, hold_after=8 << 20)
    with http_server(behaviour) as base:
        port_env = {"IMAGEHUB_IMPORT__ALLOWED_PORTS": f"[{port_of(base)}]"}
        started = cli(*import_args("--url", f"{base}/disk.qcow2", extra=("--json",)), env=port_env).json()
        catalog.settings.import_.allowed_ports = [port_of(base)]
        worker = Worker(catalog, kinds=["import"], poll_seconds=0.05)
        try:
            assert worker.poll_once() == [started["job_id"]]
            assert behaviour.reached.wait(30)
            deadline = time.monotonic() + 10  # progress is stored about once a second
            while (shown := cli("image", "show", started["id"], "--json").json())["progress"]["bytes_done"] == 0:
                assert time.monotonic() < deadline
            text = cli("image", "show", started["id"]).out
        finally:
            behaviour.release.set()
            worker.join()
    progress = shown["progress"]
    assert shown["status"] == "importing"
    assert progress["phase"] == "downloading" and progress["state"] == "running"
    assert progress["bytes_total"] == disk.stat().st_size and 0 < progress["bytes_done"] <= 8 << 20
    assert "\nprogress:         downloading " in text


def test_server_files_outside_the_import_folders_are_refused(cli: Any, people: People, config_path) -> None:
    """Nobody imports (and then downloads) the catalog, the secret, another image or a file via a symlink."""
    folder = config_path.parent
    other = make_disk(folder, "qcow2")
    store = folder / "var" / "images" / "img-someones.raw"
    store.write_bytes(b"\0" * 4096)
    workbook = folder / "var" / "workbooks" / "lnk-someones" / "images.xlsx"  # another account's workbook link
    workbook.parent.mkdir(parents=True)
    workbook.write_bytes(b"PK\3\4" + b"\0" * 4096)
    (folder / "escape.raw").symlink_to("/etc/hostname")
    for path in (
        "var/catalog.db",
        "var/secret.key",
        str(store),
        str(workbook),
        "escape.raw",
        "var/ssh_host_ed25519_key",
    ):
        done = cli(*import_args("--file", path))
        assert done.code == 2, path
        assert "is not in an import folder" in done.err, path
    assert cli("image", "list", "--json").json() == []
    os.link(store, folder / "hardlinked.raw")  # a hard link to a stored image inside the import folder
    linked = cli(*import_args("--file", "hardlinked.raw"))
    assert linked.code == 2 and "has other hard links" in linked.err
    assert cli(*import_args("--file", str(other))).code == 0

"""VMs from images: the seed ISO, the overlay, password rules, refusals, the in-use rule, the drivers."""

from __future__ import annotations

import json
import re
import shutil
import time
import warnings
from pathlib import Path

import pytest
from sqlmodel import select

from core.catalog import db
from core.catalog.catalog import Catalog
from core.catalog.errors import Conflict, Failed, Forbidden, Invalid, NotFound
from core.catalog.models import AuditEvent, Status, Vm
from core.catalog.settings import ComputeSettings
from core.compute import drivers as compute
from core.compute import vms
from core.compute.drivers import NoneDriver, QemuDriver, QmpClient, get_driver
from core.compute.seed import read_seed_iso, sha512_crypt, verify_sha512_crypt
from core.disk import qemu
from core.images import images
from core.images.images import GIB
from core.rules.display import status_word
from tests.conftest import BACKENDS, People
from tests.vmdata import SERIAL_GREETING, make_base_image, make_greeting_image, needs_qemu_system, qemu_pids

PASSWORD = "Tr1cky-Pass!"


def vm_rows(catalog: Catalog) -> list[Vm]:
    with db.read_session(catalog.engine) as session:
        return list(session.exec(select(Vm)))


def vm_folders(catalog: Catalog) -> list[Path]:
    folder = catalog.store.vms_dir
    return sorted(folder.iterdir()) if folder.is_dir() else []


# ---- the seed --------------------------------------------------------------------------------


def test_seed_iso_read_back_has_label_metadata_and_a_hash_of_the_password(catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner)
    vm = vms.create_vm(catalog, people.owner, image_id, "Web Server 01", PASSWORD)

    seed = read_seed_iso(catalog.store.vms_dir / vm["id"] / "seed.iso")

    assert seed["label"] == "cidata"
    # A Linux seed carries the NoCloud pair only: no ConfigDrive tree, so nothing in clear.
    assert set(seed) == {"label", "meta-data", "user-data"}
    assert seed["meta-data"] == f"instance-id: {vm['id']}\nlocal-hostname: web-server-01\n"
    user_data = seed["user-data"]
    assert user_data.startswith("#cloud-config\n")
    assert PASSWORD not in user_data
    hashes = set(re.findall(r"\$6\$rounds=\d+\$[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}", user_data))
    assert len(hashes) == 1
    hashed = hashes.pop()
    assert f"root:{hashed}" in user_data
    assert verify_sha512_crypt(PASSWORD, hashed)
    assert not verify_sha512_crypt(PASSWORD + "x", hashed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:  # Python 3.13+: our own verification above stands alone
            crypt = None  # type: ignore[assignment]
    if crypt is not None:
        assert crypt.crypt(PASSWORD, hashed) == hashed  # glibc agrees


def test_password_is_nowhere_in_the_catalog(catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner)
    vms.create_vm(catalog, people.owner, image_id, "web", PASSWORD)
    catalog.dispose()  # checkpoint nothing away: read the database and its WAL as they are
    for path in catalog.settings.data_dir.glob("catalog.db*"):
        assert PASSWORD.encode() not in path.read_bytes(), path
    with db.read_session(catalog.engine) as session:
        details = [f"{e.reason} {e.detail}" for e in session.exec(select(AuditEvent))]
    assert all(PASSWORD not in d for d in details)


def test_windows_seed_sets_the_administrator_password_for_cloudbase_init(catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner, os_type="Windows")
    vm = vms.create_vm(catalog, people.owner, image_id, "Win Server", PASSWORD)

    folder = catalog.store.vms_dir / vm["id"]
    seed = read_seed_iso(folder / "seed.iso")

    assert set(seed) == {
        "label",
        "meta-data",
        "user-data",
        "openstack/latest/meta_data.json",
        "openstack/latest/user_data",
    }
    # cloudbase-init extracts a raw ISO 9660 disk whatever its label; `cidata` is what NoCloud
    # wants where it does check (CD-ROM, vfat).
    assert seed["label"] == "cidata"
    # NoCloudConfigDriveService: meta-data (YAML) and user-data, whose users plugin sets `passwd` in clear.
    assert seed["meta-data"] == f"instance-id: {vm['id']}\nlocal-hostname: win-server\n"
    user_data = seed["user-data"]
    assert user_data.startswith("#cloud-config\n")
    assert "set_hostname: win-server\n" in user_data
    assert "  - name: Administrator\n" in user_data
    assert f"    passwd: {json.dumps(PASSWORD)}\n" in user_data
    # ConfigDriveService: openstack/latest/meta_data.json, read by BaseOpenStackService: `uuid`,
    # `hostname`, `admin_pass` (SetUserPasswordPlugin) and `meta.admin_username` (CreateUserPlugin,
    # which hands the user to SetUserPasswordPlugin); user_data is the same cloud-config.
    meta_data = json.loads(seed["openstack/latest/meta_data.json"])
    assert meta_data == {
        "uuid": vm["id"],
        "hostname": "win-server",
        "admin_pass": PASSWORD,
        "meta": {"admin_username": "Administrator"},
    }
    assert seed["openstack/latest/user_data"] == user_data
    # Windows takes no crypt hash: the seed is the one place the password is, readable by its owner only.
    assert (folder / "seed.iso").stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700


def test_sha512_crypt_known_answer() -> None:
    # From Drepper's SHA-crypt specification, test vectors.
    assert sha512_crypt("Hello world!", "saltstring", 5000) == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
    )
    assert sha512_crypt("Hello world!", "saltstringsaltstring", 10000) == (
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
    )


# ---- the overlay -----------------------------------------------------------------------------


def test_overlay_is_backed_by_the_image_and_grown_to_its_target_size(catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner)
    vm = vms.create_vm(catalog, people.owner, image_id, "web", PASSWORD)

    info = qemu.info(catalog.store.vms_dir / vm["id"] / "disk.qcow2", "qcow2")

    image_file = catalog.store.image_path(image_id, "raw").resolve()
    assert info["format"] == "qcow2"
    assert Path(info["backing-filename"]) == image_file
    assert Path(info["full-backing-filename"]) == image_file
    assert info["backing-filename-format"] == "raw"
    assert info["virtual-size"] == 20 * GIB
    assert vm["image_id"] == image_id
    assert set(vm) >= {"id", "name", "image_id", "status", "created_at"}


# ---- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("Sh0rt!", "password is too short; it must have 8 to 30 characters"),
        ("A1!" + "a" * 28, "password is too long; it must have 8 to 30 characters"),
        (
            "alllowercase",
            "password must contain at least three of: lowercase letters, uppercase letters, digits, specials",
        ),
        ("lower1234", "password must contain at least three of"),
        ("Has Space1!", "digits and ~!@#$%^&*()-_=+[]{}|;:,.<>/? (no spaces, quotes, backslashes or other characters)"),
        ('Quote"1aA', "password may contain only letters a-z and A-Z, digits and"),
        ("Root-Pass1", "password may not contain the user name root"),
        ("Pässw0rd!", "password may contain only letters a-z and A-Z, digits and"),
        ("", "password is required"),
    ],
)
def test_password_rules_refuse_with_a_clear_message(
    catalog: Catalog, people: People, password: str, message: str
) -> None:
    image_id = make_base_image(catalog, people.owner)
    with pytest.raises(Invalid) as caught:
        vms.create_vm(catalog, people.owner, image_id, "web", password)
    assert message in str(caught.value)
    assert vm_rows(catalog) == []
    assert vm_folders(catalog) == []
    with db.read_session(catalog.engine) as session:
        refusals = [e for e in session.exec(select(AuditEvent)) if e.action == "vm.create"]
    assert [e.outcome for e in refusals] == ["refused"]
    assert not password or all(password not in f"{e.reason} {e.detail}" for e in refusals)


def test_windows_password_may_not_contain_administrator(catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner, os_type="Windows")
    with pytest.raises(Invalid, match="may not contain the user name Administrator"):
        vms.create_vm(catalog, people.owner, image_id, "win", "xAdministrator1!")


@pytest.mark.parametrize("status", [Status.IMPORTING, Status.CREATING, Status.IMPORT_FAILED, Status.DELETED])
def test_create_refused_unless_the_image_is_available(catalog: Catalog, people: People, status: str) -> None:
    image_id = make_base_image(catalog, people.owner, status=status)
    with pytest.raises(Conflict) as caught:
        vms.create_vm(catalog, people.owner, image_id, "web", PASSWORD)
    assert str(caught.value) == (
        f"image {image_id} is {status_word(status)}; it can be used to create a VM only when available"
    )
    assert vm_rows(catalog) == []
    assert vm_folders(catalog) == []


def test_other_tenants_image_is_not_found_and_viewers_may_not_create(catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner)
    with pytest.raises(NotFound, match=f"image {image_id} not found"):
        vms.create_vm(catalog, people.other_owner, image_id, "web", PASSWORD)
    with pytest.raises(NotFound, match="image img-nothere not found"):
        vms.create_vm(catalog, people.owner, "img-nothere", "web", PASSWORD)
    with pytest.raises(Forbidden, match=f"account acme-viewer may view but not change image {image_id}"):
        vms.create_vm(catalog, people.viewer, image_id, "web", PASSWORD)
    assert vm_rows(catalog) == []
    assert vm_folders(catalog) == []
    # The manager and an admin may.
    assert vms.create_vm(catalog, people.manager, image_id, "a", PASSWORD)["status"] == "defined"
    assert vms.create_vm(catalog, people.admin, image_id, "b", PASSWORD)["status"] == "defined"


@BACKENDS
def test_vms_are_listed_per_tenant_and_per_image(catalog: Catalog, people: People) -> None:
    first = make_base_image(catalog, people.owner, name="one")
    second = make_base_image(catalog, people.owner, name="two")
    a = vms.create_vm(catalog, people.owner, first, "a", PASSWORD)
    b = vms.create_vm(catalog, people.owner, second, "b", PASSWORD)

    assert {v["id"] for v in vms.list_vms(catalog, people.viewer)} == {a["id"], b["id"]}
    assert [v["id"] for v in vms.vms_of_image(catalog, people.viewer, first)] == [a["id"]]
    assert vms.list_vms(catalog, people.other_owner) == []
    with pytest.raises(NotFound):
        vms.vms_of_image(catalog, people.other_owner, first)
    with pytest.raises(NotFound):
        vms.get_vm(catalog, people.other_owner, a["id"])
    with pytest.raises(Forbidden):
        vms.delete_vm(catalog, people.viewer, a["id"])
    assert images.get_image(catalog, people.owner, first)["vms"] == [a["id"]]


# ---- in use ----------------------------------------------------------------------------------


@BACKENDS
def test_image_delete_refused_while_a_vm_exists_and_allowed_after_vm_delete(catalog: Catalog, people: People) -> None:
    image_id = make_base_image(catalog, people.owner)
    vm = vms.create_vm(catalog, people.owner, image_id, "web", PASSWORD)  # defined, running or stopped: in use

    [refused] = images.delete_images(catalog, people.owner, [image_id])
    assert not refused.ok
    assert refused.exit_code == 5
    assert refused.error == f"image {image_id} is used by {vm['id']}"
    assert images.get_image(catalog, people.owner, image_id)["status"] == Status.AVAILABLE

    vms.delete_vm(catalog, people.owner, vm["id"])
    assert vm_rows(catalog) == []
    assert vm_folders(catalog) == []
    [done] = images.delete_images(catalog, people.owner, [image_id])
    assert done.ok and done.status == Status.DELETED


# ---- drivers ---------------------------------------------------------------------------------


@BACKENDS
def test_none_driver_records_vms_as_defined_never_running(catalog: Catalog, people: People) -> None:
    assert catalog.settings.compute.driver == "none"  # the tests' config (the shipped default is auto)
    assert isinstance(get_driver("none", catalog.settings.compute), NoneDriver)
    image_id = make_base_image(catalog, people.owner)
    before = qemu_pids(catalog.settings.data_dir)

    vm = vms.create_vm(catalog, people.owner, image_id, "web", PASSWORD)
    assert vm["driver"] == "none" and vm["status"] == "defined"  # nothing runs it: never "running"
    assert qemu_pids(catalog.settings.data_dir) == before
    for action in (vms.start_vm, vms.stop_vm):
        with pytest.raises(Conflict, match=f"vm {vm['id']} is only defined: no compute driver runs it"):
            action(catalog, people.owner, vm["id"])
    assert [v["status"] for v in vms.list_vms(catalog, people.owner)] == ["defined"]
    assert vms.get_vm(catalog, people.owner, vm["id"])["status"] == "defined"
    # a row an older version recorded as running under none is shown as what it is
    with db.write_session(catalog.engine) as session:
        row = session.get(Vm, vm["id"])
        assert row is not None
        row.status = "running"
        session.add(row)
    assert vms.get_vm(catalog, people.owner, vm["id"])["status"] == "defined"
    vms.delete_vm(catalog, people.owner, vm["id"])
    assert vms.list_vms(catalog, people.owner) == []


def test_auto_driver_is_qemu_where_its_qemu_system_is_installed_else_none(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ComputeSettings()
    assert settings.driver == "auto"
    installed = shutil.which("qemu-system-x86_64") is not None
    assert compute.driver_for(settings, "x86_64") == ("qemu" if installed else "none")
    monkeypatch.setitem(compute.QEMU_BINARY, "x86_64", "qemu-system-imagehub-absent")
    assert compute.driver_for(settings, "x86_64") == "none"
    assert compute.driver_for(settings, "ppc64") == "none"  # no qemu this driver would run
    assert compute.driver_for(ComputeSettings(driver="qemu"), "x86_64") == "qemu"  # configured: as is
    assert compute.driver_for(ComputeSettings(driver="none"), "x86_64") == "none"


@pytest.mark.skipif(not needs_qemu_system, reason="qemu-system-x86_64 is not installed (.ci/run installs it)")
def test_qemu_driver_starts_a_vm_under_tcg_that_qmp_reports_running_then_stops_it(
    catalog: Catalog, people: People
) -> None:
    catalog.settings.compute = ComputeSettings(driver="qemu", accel="tcg", memory_mb=128, stop_timeout_seconds=1)
    image_id = make_base_image(catalog, people.owner)  # no guest OS: the firmware finds nothing to boot
    before = qemu_pids(catalog.settings.data_dir)

    vm = vms.create_vm(catalog, people.owner, image_id, "web", PASSWORD)
    try:
        folder = catalog.store.vms_dir / vm["id"]
        assert vm["driver"] == "qemu" and vm["status"] == "running"
        with QmpClient(folder / "qmp.sock") as qmp:
            assert qmp.execute("query-status")["status"] == "running"
            assert qmp.execute("query-kvm")["enabled"] is False  # TCG
            blocks = {b["device"] or b["qdev"]: b for b in qmp.execute("query-block")}
        files = {b["inserted"]["file"] for b in blocks.values() if b.get("inserted")}
        assert str(folder / "disk.qcow2") in files and str(folder / "seed.iso") in files
        started = qemu_pids(catalog.settings.data_dir) - before
        assert len(started) == 1
        assert [v["status"] for v in vms.list_vms(catalog, people.owner)] == ["running"]

        # The guest cannot answer ACPI: after the 1 s timeout the driver quits qemu through QMP.
        assert vms.stop_vm(catalog, people.owner, vm["id"])["status"] == "stopped"
        assert qemu_pids(catalog.settings.data_dir) == before
        assert not (folder / "qmp.sock").exists()
        driver = get_driver("qemu", catalog.settings.compute)
        assert isinstance(driver, QemuDriver)
        assert driver.status(vms.machine_spec(catalog, vm_rows(catalog)[0])) == "stopped"

        # A guest that powers itself off is seen as stopped.
        assert vms.start_vm(catalog, people.owner, vm["id"])["status"] == "running"
        with QmpClient(folder / "qmp.sock") as qmp:
            qmp.execute("quit")
        deadline = time.monotonic() + 10
        while qemu_pids(catalog.settings.data_dir) != before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vms.get_vm(catalog, people.owner, vm["id"])["status"] == "stopped"
        assert vm_rows(catalog)[0].status == "stopped"

        # Started again, then deleted while running: delete stops it and removes its files.
        assert vms.start_vm(catalog, people.owner, vm["id"])["status"] == "running"
        assert len(qemu_pids(catalog.settings.data_dir) - before) == 1
    finally:
        vms.delete_vm(catalog, people.owner, vm["id"])
    assert qemu_pids(catalog.settings.data_dir) == before
    assert vm_folders(catalog) == []


def test_vm_that_cannot_start_leaves_nothing(catalog: Catalog, people: People, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog.settings.compute = ComputeSettings(driver="qemu", accel="tcg", memory_mb=128)
    monkeypatch.setitem(compute.QEMU_BINARY, "x86_64", "qemu-system-imagehub-absent")
    image_id = make_base_image(catalog, people.owner)
    with pytest.raises(Failed) as caught:
        vms.create_vm(catalog, people.owner, image_id, "web", PASSWORD)
    assert "could not be started, so it was not created: qemu-system-imagehub-absent is not installed" in str(
        caught.value
    )
    assert vm_rows(catalog) == []
    assert vm_folders(catalog) == []
    [done] = images.delete_images(catalog, people.owner, [image_id])
    assert done.ok


def test_qemu_command_picks_the_binary_by_arch_and_kvm_only_when_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_x86 = compute.MachineSpec("vm-aaaaaaaa", "x86_64", tmp_path)
    spec_arm = compute.MachineSpec("vm-bbbbbbbb", "aarch64", tmp_path)
    monkeypatch.setattr(compute, "host_arch", lambda: "x86_64")

    def accels(command: list[str]) -> list[str]:
        return [command[i + 1] for i, arg in enumerate(command) if arg == "-accel"]

    monkeypatch.setattr(compute, "kvm_usable", lambda: True)
    auto = QemuDriver(ComputeSettings(driver="qemu"))
    command = auto.command(spec_x86)
    assert command[0] == "qemu-system-x86_64"
    assert accels(command) == ["kvm", "tcg"]  # TCG if KVM fails to start
    assert accels(auto.command(spec_arm)) == ["tcg"]  # no KVM across architectures
    assert auto.command(spec_arm)[0] == "qemu-system-aarch64"
    assert accels(QemuDriver(ComputeSettings(accel="tcg")).command(spec_x86)) == ["tcg"]
    assert "-qmp" in command and command[command.index("-qmp") + 1] == "unix:qmp.sock,server=on,wait=off"
    assert f"file={tmp_path / 'disk.qcow2'},format=qcow2,if=virtio,cache=writeback,discard=unmap" in command

    arm_tcg = auto.command(spec_arm)
    assert arm_tcg[arm_tcg.index("-cpu") + 1] == "max"
    monkeypatch.setattr(compute, "host_arch", lambda: "aarch64")
    arm_kvm = auto.command(spec_arm)
    assert accels(arm_kvm) == ["kvm"] and arm_kvm[arm_kvm.index("-cpu") + 1] == "host"

    monkeypatch.setattr(compute, "host_arch", lambda: "x86_64")
    monkeypatch.setattr(compute, "kvm_usable", lambda: False)
    assert accels(auto.command(spec_x86)) == ["tcg"]
    with pytest.raises(Failed, match="KVM is not usable for x86_64 on this host"):
        QemuDriver(ComputeSettings(accel="kvm")).command(spec_x86)
    with pytest.raises(Invalid, match="architecture ppc64 cannot be run"):
        auto.command(compute.MachineSpec("vm-cccccccc", "ppc64", tmp_path))


@pytest.mark.skipif(not needs_qemu_system, reason="qemu-system-x86_64 is not installed (.ci/run installs it)")
def test_qemu_driver_auto_uses_kvm_only_when_usable(catalog: Catalog, people: People) -> None:
    catalog.settings.compute = ComputeSettings(driver="qemu", accel="auto", memory_mb=128)
    image_id = make_base_image(catalog, people.owner)
    vm = vms.create_vm(catalog, people.owner, image_id, "web", PASSWORD)
    try:
        with QmpClient(catalog.store.vms_dir / vm["id"] / "qmp.sock") as qmp:
            assert qmp.execute("query-status")["status"] == "running"
            kvm = qmp.execute("query-kvm")
        if not compute.kvm_usable():
            assert kvm["enabled"] is False
    finally:
        vms.delete_vm(catalog, people.owner, vm["id"])


# ---- console ---------------------------------------------------------------------------------


def wait_for_console(console: vms.Console, text: bytes, timeout: float = 60) -> bytes:
    """The console log once `text` is in it (the guest writes it to its serial port)."""
    deadline = time.monotonic() + timeout
    while text not in (seen := console.read()):
        assert time.monotonic() < deadline, f"{text!r} never reached the console: {seen!r}"
        time.sleep(0.1)
    return seen


def test_the_console_log_shows_what_the_guest_printed_to_its_managers_only(
    qemu_catalog: Catalog, people: People
) -> None:
    catalog = qemu_catalog
    vm = vms.create_vm(catalog, people.owner, make_greeting_image(catalog, people.owner), "hello", PASSWORD)
    try:
        console = vms.open_console(catalog, people.owner, vm["id"])
        assert console.live()
        log = wait_for_console(console, SERIAL_GREETING)
        assert console.read(log.index(SERIAL_GREETING)).startswith(SERIAL_GREETING)  # from any offset
        assert console.read(10**9) == b""
        with pytest.raises(Forbidden, match=f"account acme-viewer may view but not change vm {vm['id']}"):
            vms.open_console(catalog, people.viewer, vm["id"])
        with pytest.raises(NotFound, match=f"vm {vm['id']} not found"):
            vms.open_console(catalog, people.other_owner, vm["id"])
        vms.stop_vm(catalog, people.owner, vm["id"], force=True)
        assert not console.live()
        assert SERIAL_GREETING in vms.open_console(catalog, people.owner, vm["id"]).read()  # kept after a stop
    finally:
        vms.delete_vm(catalog, people.owner, vm["id"])


def test_a_vm_that_never_ran_has_no_console(catalog: Catalog, people: People) -> None:
    vm = vms.create_vm(catalog, people.owner, make_base_image(catalog, people.owner), "idle", PASSWORD)
    with pytest.raises(Conflict, match=f"vm {vm['id']} is only defined: it has never run, so it has no console"):
        vms.open_console(catalog, people.owner, vm["id"])

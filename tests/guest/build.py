"""A real, small, bootable Debian guest for the tests, built offline from Debian packages.

`build_guest()` returns the path of a compressed qcow2 holding Debian bookworm (minbase plus the
cloud kernel, systemd, udev and cloud-init), building it first if the cache does not hold it yet.
The disk boots through the firmware (SeaBIOS) as a customer's image would:

- an MBR (sfdisk) with syslinux's `mbr.bin` in sector 0;
- partition 1, FAT (`mkfs.fat --offset`), active: syslinux (`syslinux --offset --install`), the
  kernel, the initrd and `syslinux.cfg` (`root=/dev/vda2 console=ttyS0`), copied in with mtools;
- partition 2, ext4 (`mke2fs -d ROOTDIR -E offset=...`): the root file system.

Nothing is mounted and no loop device is used: the file systems are written straight into the raw
file. mmdebstrap runs in root mode with `--skip=chroot/mount` (it only chroots; it mounts nothing,
so it needs root, but not CAP_SYS_ADMIN).

In the guest: root's password is `OLD_PASSWORD` until cloud-init reads a NoCloud seed (an ISO 9660
volume labelled `cidata`, as `core.compute.seed` writes it) and sets the seed's password and host
name; cloud-init looks for NoCloud only (`datasource_list: [ NoCloud, None ]`), and leaves the
network to systemd-networkd (DHCP on every ethernet link). A getty runs on ttyS0, and the power
button (ACPI, qemu's `system_powerdown`) powers the guest off (systemd-logind).

The image is cached outside the repository, under `$IMAGEHUB_GUEST_CACHE` or
`~/.cache/imagehub/guest`, in a folder named by a hash of the package list and `RECIPE_VERSION`
(bump it when the recipe changes). It is built in a temporary folder beside it and renamed into
place, so a killed build leaves no half image; a lock keeps two builds of one key from racing.

    python tests/guest/build.py [--cache DIR]    # prints the qcow2's path
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.compute.seed import sha512_crypt

OLD_PASSWORD = "Old-Passw0rd!"
RECIPE_VERSION = 2
IMAGE_NAME = "debian-guest.qcow2"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "udev",
    "cloud-init",
    # systemd-logind runs only with a D-Bus daemon, and logind is what powers off on the ACPI power button.
    "dbus",
)
KERNEL_ARGS = "root=/dev/vda2 rw console=ttyS0,115200 quiet"
GUEST_HOSTNAME = "debian-guest"

SECTOR = 512
MIB = 1024 * 1024
BOOT_START = 1 * MIB
BOOT_SIZE = 64 * MIB
ROOT_START = BOOT_START + BOOT_SIZE
DISK_SIZE = 2048 * MIB
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")

# Docs, man pages and translations are not needed to boot; dpkg leaves them out.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/info/*",
)

CLOUD_CFG = """\
# imagehub's test guest: the NoCloud seed only, no waiting on network metadata services.
datasource_list: [ NoCloud, None ]
# systemd-networkd configures the network (DHCP); cloud-init writes no network config.
network: {config: disabled}
# Only the modules the tests need (host name, root's password): fewer is a faster boot under TCG.
# No default user, no SSH host keys (no sshd), no locale generation.
users: []
cloud_init_modules: [seed_random, bootcmd, write-files, set_hostname, update_hostname, update_etc_hosts]
cloud_config_modules: [set-passwords, runcmd]
cloud_final_modules: [scripts-per-once, scripts-per-boot, scripts-per-instance, scripts-user, final-message]
"""

NETWORK_CFG = """\
[Match]
Type=ether

[Network]
DHCP=ipv4
"""

# cloud-config.service (set-passwords) is not ordered before logins upstream, cloud-init.service is:
# without this, `login:` could show while root still has the image's old password.
LOGINS_AFTER_CLOUD_CONFIG = """\
[Unit]
After=cloud-config.service
"""

FSTAB = """\
/dev/vda2 / ext4 rw,errors=remount-ro 0 1
"""

SYSLINUX_CFG = f"""\
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND {KERNEL_ARGS}
"""


def log(message: str) -> None:
    print(f"[guest] {message}", file=sys.stderr, flush=True)


def default_cache() -> Path:
    configured = os.environ.get("IMAGEHUB_GUEST_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "imagehub" / "guest"


def recipe_key() -> str:
    """What the image is made of; another key is another image."""
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": sorted(PACKAGES),
        "kernel_args": KERNEL_ARGS,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def build_guest(cache: Path | None = None) -> Path:
    """The cached guest qcow2's path; build it first if the cache does not hold it."""
    cache = cache if cache is not None else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    key = recipe_key()
    image = cache / key / IMAGE_NAME
    if image.is_file():
        return image
    with _locked(cache / f"{key}.lock"):
        if image.is_file():
            return image
        for stale in cache.glob(f".build-{key}-*"):  # a killed build's; the lock says no build runs
            log(f"removing {stale}")
            shutil.rmtree(stale)
        with tempfile.TemporaryDirectory(prefix=f".build-{key}-", dir=cache) as work:
            os.chmod(work, 0o755)  # apt downloads as _apt into the root file system
            built = _build(Path(work))
            final_dir = Path(work) / "out"
            final_dir.mkdir()
            built.rename(final_dir / IMAGE_NAME)
            final_dir.rename(cache / key)
    log(f"cached {image}")
    return image


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(work: Path) -> Path:
    started = time.monotonic()
    rootfs = work / "rootfs"
    boot = work / "boot"
    boot.mkdir()
    _bootstrap(rootfs)
    _customize(rootfs)
    _move_kernel(rootfs, boot)
    raw = work / "disk.raw"
    _make_disk(raw, rootfs, boot)
    shutil.rmtree(rootfs)
    qcow2 = work / IMAGE_NAME
    log("converting to a compressed qcow2")
    _run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)])
    raw.unlink()
    log(f"built in {time.monotonic() - started:.0f}s ({qcow2.stat().st_size // MIB} MiB)")
    return qcow2


def _run(argv: list[str], **kwargs: object) -> None:
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def _bootstrap(rootfs: Path) -> None:
    if os.geteuid() != 0:
        raise SystemExit("building the guest needs root (mmdebstrap's root mode chroots; it mounts nothing)")
    log(f"mmdebstrap {SUITE} minbase + {', '.join(PACKAGES)}")
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--skip=chroot/mount",
        "--format=directory",
        f"--include={','.join(PACKAGES)}",
        # Only the drivers a VM needs, without /sys to look at: MODULES=most has virtio_blk and virtio_pci.
        '--essential-hook=mkdir -p "$1/etc/initramfs-tools/conf.d"'
        ' && echo MODULES=most > "$1/etc/initramfs-tools/conf.d/imagehub"',
    ]
    argv += [f"--dpkgopt={option}" for option in DPKG_EXCLUDES]
    argv += [SUITE, str(rootfs), MIRROR]
    _run(argv, stdout=sys.stderr)


def _customize(rootfs: Path) -> None:
    log("customizing: root password, cloud-init, networkd, fstab, host name")
    _set_root_password(rootfs, OLD_PASSWORD)
    _write(rootfs / "etc/cloud/cloud.cfg.d/90-imagehub.cfg", CLOUD_CFG)
    _write(rootfs / "etc/systemd/network/80-dhcp.network", NETWORK_CFG)
    _write(rootfs / "etc/systemd/system/systemd-user-sessions.service.d/imagehub.conf", LOGINS_AFTER_CLOUD_CONFIG)
    _write(rootfs / "etc/fstab", FSTAB)
    _write(rootfs / "etc/hostname", GUEST_HOSTNAME + "\n")
    _write(rootfs / "etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {GUEST_HOSTNAME}\n")
    _run(["chroot", str(rootfs), "systemctl", "enable", "systemd-networkd.service"])
    # A scrub of LVM snapshots: there are none, and it costs seconds of a TCG boot.
    _run(["chroot", str(rootfs), "systemctl", "mask", "e2scrub_reap.service"])
    for leftover in ("var/cache/apt", "var/lib/apt/lists", "var/log"):
        for entry in (rootfs / leftover).glob("*"):
            if entry.is_file():
                entry.unlink()


def _set_root_password(rootfs: Path, password: str) -> None:
    shadow = rootfs / "etc/shadow"
    lines = shadow.read_text().splitlines()
    hashed = sha512_crypt(password)
    updated = []
    for line in lines:
        fields = line.split(":")
        if fields[0] == "root":
            fields[1] = hashed
        updated.append(":".join(fields))
    shadow.write_text("\n".join(updated) + "\n")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _move_kernel(rootfs: Path, boot: Path) -> None:
    """The kernel and initrd go to the FAT partition (syslinux reads them there), not the root."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise RuntimeError(f"expected one kernel and one initrd, found {kernels} {initrds}")
    shutil.copy(kernels[0], boot / "vmlinuz")
    shutil.copy(initrds[0], boot / "initrd.img")
    _write(boot / "syslinux.cfg", SYSLINUX_CFG)


def _make_disk(raw: Path, rootfs: Path, boot: Path) -> None:
    log(f"writing the disk ({DISK_SIZE // MIB} MiB raw, sparse): MBR, FAT boot, ext4 root")
    with raw.open("wb") as handle:
        handle.truncate(DISK_SIZE)
    table = (
        "label: dos\n"
        f"start={BOOT_START // SECTOR}, size={BOOT_SIZE // SECTOR}, type=e, bootable\n"
        f"start={ROOT_START // SECTOR}, type=83\n"
    )
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)], input=table.encode())
    _run(
        ["dd", f"if={SYSLINUX_MBR}", f"of={raw}", "bs=440", "count=1", "conv=notrunc", "status=none"],
    )
    _run(
        [
            "mkfs.fat", "-F", "16", "-n", "BOOT",
            f"--offset={BOOT_START // SECTOR}", "-h", str(BOOT_START // SECTOR),
            str(raw), str(BOOT_SIZE // 1024),
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    fat = f"{raw}@@{BOOT_START}"
    _run(["syslinux", f"--offset={BOOT_START}", "--install", str(raw)])
    for name in ("vmlinuz", "initrd.img", "syslinux.cfg"):
        _run(["mcopy", "-o", "-i", fat, str(boot / name), f"::{name}"])
    root_size = DISK_SIZE - ROOT_START
    _run(
        [
            "mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", str(rootfs),
            "-E", f"offset={ROOT_START},nodiscard", str(raw), f"{root_size // 1024}k",
        ]
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="Build (or reuse) the Debian test guest; print its qcow2's path.")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder (default: $IMAGEHUB_GUEST_CACHE or ~/.cache/imagehub/guest)",
    )
    args = parser.parse_args()
    print(build_guest(args.cache))


if __name__ == "__main__":
    main()

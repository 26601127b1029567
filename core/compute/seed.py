"""The cloud-init NoCloud seed that hands a new VM its admin password, and the password rules.

The seed is an ISO 9660 volume labelled `cidata` (made with pycdlib, with Rock Ridge and Joliet
names) holding `meta-data` (instance id and host name) and `user-data`:

- Linux images (cloud-init): `#cloud-config` with `chpasswd` setting the password of `root` from a
  SHA-512 crypt hash (`$6$rounds=...$salt$hash`), so the clear password is not on the seed.
- Windows images (cloudbase-init): the same volume carries what both of cloudbase-init's drive
  services read, so the password arrives whichever of them the image enables:
  - NoCloudConfigDriveService: `meta-data` and `user-data`, a `#cloud-config` with a `users`
    entry for `Administrator` carrying `passwd` (UserDataPlugin's users plugin sets the password
    of an existing user from it, in clear). NoCloud metadata has no admin password key.
  - ConfigDriveService (in cloudbase-init's default `metadata_services`):
    `openstack/latest/meta_data.json` with `uuid`, `hostname`, `admin_pass` (what
    SetUserPasswordPlugin sets when `inject_user_password` is true) and `meta.admin_username`
    `Administrator` (whom CreateUserPlugin and so SetUserPasswordPlugin target), and
    `openstack/latest/user_data`, the same cloud-config.
  cloudbase-init checks the label (`config-2` for ConfigDriveService, `cidata` for NoCloud) only
  on CD-ROM drives, vfat drives and mounted volumes; a disk holding a raw ISO 9660 image, which
  is how the seed is attached (`if=virtio`), it extracts with bsdtar whatever the label, so one
  `cidata` volume serves both services.
  Windows cannot take a crypt hash, so this seed holds the password in clear: it is written
  owner-only (0600) inside the VM's folder (0700) and nowhere else.

The password itself is never stored in the catalog or written to a log.
SHA-512 crypt is implemented here (Drepper's specification, as glibc's `crypt(3)` `$6$`), since
Python's `crypt` module is deprecated and gone in 3.13.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from core.catalog.errors import Invalid

PASSWORD_MIN = 8
PASSWORD_MAX = 30
PASSWORD_SPECIALS = "~!@#$%^&*()-_=+[]{}|;:,.<>/?"
SEED_LABEL = "cidata"
CRYPT_ROUNDS = 50_000

_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SALT_CHARS = _B64
_SHA512_CRYPT = re.compile(r"^\$6\$(?:rounds=(\d+)\$)?([^$]{0,16})\$([./0-9A-Za-z]{86})$")


# ---- password rules -------------------------------------------------------------------------


def check_password(password: str | None, os_type: str = "Linux") -> str:
    """The admin password rules; raise Invalid with one line saying what is wrong.

    8 to 30 characters; letters, digits and the specials ~!@#$%^&*()-_=+[]{}|;:,.<>/? only
    (no spaces, quotes or backslashes); at least three of: lowercase, uppercase, digit, special;
    may not contain the admin user's name (root / Administrator).
    """
    # The messages go to the audit trail too: they name the rule, never the password's characters or length.
    if not password:
        raise Invalid("password is required")
    if len(password) < PASSWORD_MIN or len(password) > PASSWORD_MAX:
        if len(password) < PASSWORD_MIN:
            raise Invalid(
                "password is too short; it must have {minimum} to {maximum} characters",
                minimum=PASSWORD_MIN,
                maximum=PASSWORD_MAX,
            )
        raise Invalid(
            "password is too long; it must have {minimum} to {maximum} characters",
            minimum=PASSWORD_MIN,
            maximum=PASSWORD_MAX,
        )
    if any(not (ch.isascii() and (ch.isalnum() or ch in PASSWORD_SPECIALS)) for ch in password):
        raise Invalid(
            "password may contain only letters a-z and A-Z, digits and {specials} "
            "(no spaces, quotes, backslashes or other characters)",
            specials=PASSWORD_SPECIALS,
        )
    classes = [
        any(ch.islower() for ch in password),
        any(ch.isupper() for ch in password),
        any(ch.isdigit() for ch in password),
        any(ch in PASSWORD_SPECIALS for ch in password),
    ]
    if sum(classes) < 3:
        raise Invalid("password must contain at least three of: lowercase letters, uppercase letters, digits, specials")
    user = admin_user(os_type)
    if user.lower() in password.lower():
        raise Invalid("password may not contain the user name {user}", user=user)
    return password


def admin_user(os_type: str) -> str:
    return "Administrator" if is_windows(os_type) else "root"


def is_windows(os_type: str) -> bool:
    return os_type.strip().lower() == "windows"


# ---- SHA-512 crypt --------------------------------------------------------------------------


def _b64_24(b2: int, b1: int, b0: int, count: int) -> str:
    word = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(count):
        out.append(_B64[word & 0x3F])
        word >>= 6
    return "".join(out)


def _sha512_crypt_digest(password: bytes, salt: bytes, rounds: int) -> str:
    size = len(password)
    digest_b = hashlib.sha512(password + salt + password).digest()
    ctx = hashlib.sha512(password + salt)
    remaining = size
    while remaining > 64:
        ctx.update(digest_b)
        remaining -= 64
    ctx.update(digest_b[:remaining])
    bits = size
    while bits > 0:
        ctx.update(digest_b if bits & 1 else password)
        bits >>= 1
    digest_a = ctx.digest()
    dp = hashlib.sha512(password * size).digest()
    p_bytes = (dp * (size // 64 + 1))[:size]
    ds = hashlib.sha512(salt * (16 + digest_a[0])).digest()
    s_bytes = (ds * (len(salt) // 64 + 1))[: len(salt)]
    current = digest_a
    for i in range(rounds):
        step = hashlib.sha512(p_bytes if i & 1 else current)
        if i % 3:
            step.update(s_bytes)
        if i % 7:
            step.update(p_bytes)
        step.update(current if i & 1 else p_bytes)
        current = step.digest()
    out = []
    for i in range(21):
        a, b, c = i, i + 21, i + 42
        triple = ((a, b, c), (b, c, a), (c, a, b))[i % 3]
        out.append(_b64_24(current[triple[0]], current[triple[1]], current[triple[2]], 4))
    out.append(_b64_24(0, 0, current[63], 2))
    return "".join(out)


def sha512_crypt(password: str, salt: str | None = None, rounds: int = CRYPT_ROUNDS) -> str:
    """`$6$rounds=N$salt$hash`, as `mkpasswd -m sha-512` and glibc's crypt(3) make it."""
    salt = salt if salt is not None else "".join(secrets.choice(_SALT_CHARS) for _ in range(16))
    salt = salt[:16]
    rounds = max(1000, min(rounds, 999_999_999))
    digest = _sha512_crypt_digest(password.encode("utf-8"), salt.encode("ascii"), rounds)
    prefix = "$6$" if rounds == 5000 else f"$6$rounds={rounds}$"
    return f"{prefix}{salt}${digest}"


def verify_sha512_crypt(password: str, hashed: str) -> bool:
    match = _SHA512_CRYPT.match(hashed)
    if match is None:
        return False
    rounds = int(match.group(1)) if match.group(1) else 5000
    digest = _sha512_crypt_digest(password.encode("utf-8"), match.group(2).encode("ascii"), rounds)
    return secrets.compare_digest(digest, match.group(3))


# ---- the seed -------------------------------------------------------------------------------


def hostname_for(name: str, fallback: str) -> str:
    """A valid host name (RFC 1123 label) made from the VM's name, else `fallback`."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or fallback


CONFIG_DRIVE_DIR = "openstack/latest"


@dataclass(frozen=True)
class SeedData:
    meta_data: str
    user_data: str
    # cloudbase-init's ConfigDriveService `openstack/latest/meta_data.json` (Windows seeds only);
    # `openstack/latest/user_data` then repeats `user_data`.
    config_drive_meta_data: str | None = None

    def files(self) -> dict[str, str]:
        """The seed's files by their path on the volume."""
        found = {"meta-data": self.meta_data, "user-data": self.user_data}
        if self.config_drive_meta_data is not None:
            found[f"{CONFIG_DRIVE_DIR}/meta_data.json"] = self.config_drive_meta_data
            found[f"{CONFIG_DRIVE_DIR}/user_data"] = self.user_data
        return found


def seed_data(instance_id: str, hostname: str, password: str, os_type: str) -> SeedData:
    """meta-data and user-data for the guest (password rules are checked by the caller)."""
    meta = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    if is_windows(os_type):
        user = (
            "#cloud-config\n"
            f"set_hostname: {hostname}\n"
            "users:\n"
            "  - name: Administrator\n"
            f"    passwd: {json.dumps(password)}\n"
            "    groups: Administrators\n"
        )
        config_drive = config_drive_meta_data(instance_id, hostname, password)
    else:
        hashed = sha512_crypt(password)
        user = (
            "#cloud-config\n"
            f"hostname: {hostname}\n"
            "disable_root: false\n"
            "ssh_pwauth: true\n"
            "chpasswd:\n"
            "  expire: false\n"
            "  users:\n"
            "    - name: root\n"
            f"      password: {json.dumps(hashed)}\n"
            "      type: hash\n"
            # cloud-init before 22.2 reads only `list` (`user:hash`, a hash is recognised by its $6$).
            "  list: |\n"
            f"    root:{hashed}\n"
        )
        config_drive = None
    return SeedData(meta, user, config_drive)


def config_drive_meta_data(instance_id: str, hostname: str, password: str) -> str:
    """cloudbase-init ConfigDriveService's `meta_data.json`: what BaseOpenStackService reads."""
    meta = {
        "uuid": instance_id,
        "hostname": hostname,
        "admin_pass": password,
        "meta": {"admin_username": "Administrator"},
    }
    return json.dumps(meta, indent=2) + "\n"


def _iso9660_dir(name: str) -> str:
    """A level-3 ISO 9660 directory name (guests read the Rock Ridge or Joliet one)."""
    return name.upper().replace("-", "")


def _iso9660_file(name: str) -> str:
    """A level-3 ISO 9660 file name: `meta-data` -> `METADATA.;1`, `meta_data.json` -> `META_DATA.JSON;1`."""
    stem, _dot, ext = _iso9660_dir(name).partition(".")
    return f"{stem}.{ext};1"


def write_seed_iso(path: Path, data: SeedData) -> None:
    """Write the seed ISO (label `cidata`) owner-only; replaces nothing half-written."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=SEED_LABEL, joliet=3, rock_ridge="1.09")
    made_dirs: set[str] = set()
    for name, text in data.files().items():
        *dirs, base = name.split("/")
        for depth in range(1, len(dirs) + 1):
            folder = "/".join(dirs[:depth])
            if folder not in made_dirs:
                iso_folder = "/".join(_iso9660_dir(part) for part in dirs[:depth])
                iso.add_directory(f"/{iso_folder}", rr_name=dirs[depth - 1], joliet_path=f"/{folder}")
                made_dirs.add(folder)
        iso_path = "/".join([*(_iso9660_dir(part) for part in dirs), _iso9660_file(base)])
        body = text.encode("utf-8")
        iso.add_fp(io.BytesIO(body), len(body), f"/{iso_path}", rr_name=base, joliet_path=f"/{name}")
    staged = path.with_name(path.name + ".part")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            iso.write_fp(handle)
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    finally:
        iso.close()


def read_seed_iso(path: Path) -> dict[str, str]:
    """Every file of a seed ISO by its Rock Ridge path (`meta-data`,
    `openstack/latest/meta_data.json`), plus its volume label under `label`."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        found = {"label": iso.pvd.volume_identifier.decode("ascii").strip()}
        for folder, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                rr_path = f"{folder.rstrip('/')}/{name}"
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=rr_path)
                found[rr_path.lstrip("/")] = out.getvalue().decode("utf-8")
        return found
    finally:
        iso.close()

"""Each validation refusal: the field, what is allowed, and exit status 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.catalog.errors import Invalid
from core.catalog.osmatrix import load_os_matrix
from core.rules.validation import check_description, check_name, check_os, check_sha256, check_size_gb

REPO = Path(__file__).resolve().parents[2]
MATRIX = load_os_matrix(REPO / "config" / "os_matrix.toml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Solaris", "CentOS", "x86_64", "7.9"), "system type Solaris is not offered; choose one of Linux, Windows"),
        (
            ("Linux", "Windows", "x86_64", "2016"),
            "platform Windows is not offered for Linux; choose one of CentOS, Ubuntu",
        ),
        (
            ("Windows", "Windows", "aarch64", "2016"),
            "architecture aarch64 is not offered for Windows; choose one of x86_64",
        ),
        (
            ("Linux", "CentOS", "aarch64", "7.5"),
            "OS version 7.5 is not offered for CentOS aarch64; choose one of 7.6, 7.7, 7.8, 7.9",
        ),
        (
            ("Linux", "Ubuntu", "x86_64", "18.04"),
            "OS version 18.04 is not offered for Ubuntu x86_64; choose one of 14.04, 16.04",
        ),
        (("Linux", "CentOS", "x86_64", "6.4"), "OS version 6.4 is not offered for CentOS x86_64; choose one of 6.5"),
        (("Linux", "CentOS", "x86_64", ""), "OS version is required; choose one of 6.5"),
        ((None, "CentOS", "x86_64", "7.9"), "system type is required; choose one of Linux, Windows"),
    ],
)
def test_os_refusals(args, message):
    with pytest.raises(Invalid) as refused:
        check_os(MATRIX, *args)
    assert str(refused.value).startswith(message)
    assert refused.value.exit_code == 2


def test_every_version_of_the_spec_matrix_is_accepted():
    expected = {
        ("CentOS", "x86_64"): [f"6.{m}" for m in range(5, 11)] + [f"7.{m}" for m in range(10)],
        ("CentOS", "aarch64"): ["7.6", "7.7", "7.8", "7.9"],
        ("Ubuntu", "x86_64"): ["14.04", "16.04"],
        ("Ubuntu", "aarch64"): ["16.04", "18.04"],
        ("Windows", "x86_64"): ["2008", "2008R2", "2012", "2012R2", "2016"],
    }
    for (platform, arch), versions in expected.items():
        assert MATRIX.versions_for(platform, arch) == versions
        os_type = "Windows" if platform == "Windows" else "Linux"
        for version in versions:
            assert check_os(MATRIX, os_type, platform, arch, version).os_name == f"{platform} {version} {arch}"


def test_choices_are_case_insensitive_and_canonicalised():
    choice = check_os(MATRIX, "linux", "centos", "X86_64", "7.9")
    assert (choice.os_type, choice.platform, choice.arch) == ("Linux", "CentOS", "x86_64")


def test_an_admin_may_add_a_platform(tmp_path: Path):
    extra = tmp_path / "matrix.toml"
    extra.write_text(
        (REPO / "config" / "os_matrix.toml").read_text()
        + '\n[platforms.Kylin]\nos_type = "Kylin"\n[platforms.Kylin.versions]\nx86_64 = ["V10"]\n'
    )
    matrix = load_os_matrix(extra)
    assert "Kylin" in matrix.os_types
    assert check_os(matrix, "Kylin", "Kylin", "x86_64", "V10").os_name == "Kylin V10 x86_64"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("19", "size (GB) 19 is out of range; choose 20 to 500 GB"),
        ("501", "size (GB) 501 is out of range; choose 20 to 500 GB"),
        ("abc", "size (GB) must be a whole number from 20 to 500"),
        ("20.5", "size (GB) must be a whole number from 20 to 500"),
        ("-20", "size (GB) must be a whole number from 20 to 500"),
    ],
)
def test_size_refusals(value, message):
    with pytest.raises(Invalid, match="^" + re.escape(message) + "$"):
        check_size_gb(value, 20, 500)


def test_size_bounds_are_inclusive():
    assert check_size_gb("20", 20, 500) == 20 and check_size_gb(500, 20, 500) == 500


def test_name_and_description_rules():
    assert check_name("  web  ") == "web"
    assert check_name("x" * 64) == "x" * 64
    with pytest.raises(Invalid, match="^name is required"):
        check_name("   ")
    with pytest.raises(Invalid, match="^name is 65 characters long; at most 64 are allowed$"):
        check_name("x" * 65)
    with pytest.raises(Invalid, match="control characters"):
        check_name("bad\x1b[31mname")
    assert check_description("d" * 256) == "d" * 256
    with pytest.raises(Invalid, match="^remark is 257 characters long; at most 256 are allowed$"):
        check_description("d" * 257)


def test_sha256_rules():
    digest = "A" * 64
    assert check_sha256(digest) == "a" * 64
    assert check_sha256("") is None
    for bad in ("a" * 63, "a" * 65, "g" * 64):
        with pytest.raises(Invalid, match="^sha256 must be 64 hexadecimal digits$"):
            check_sha256(bad)

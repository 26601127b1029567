"""The command line's text output says what the TUI says: statuses in people's words, the OS and the
architecture apart, sizes in GB by the same formatter; JSON keeps the contract's names."""

from __future__ import annotations

from typing import Any

from core.catalog.catalog import Catalog
from core.rules.display import size_in_gb
from tests.conftest import People
from tests.tui.conftest import add_images


def test_image_list_text_uses_the_tui_s_words_and_sizes(cli: Any, catalog: Catalog, people: People) -> None:
    add_images(catalog)
    listed = cli("image", "list", "--tenant", "acme")
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split() == ["ID", "NAME", "SYSTEM", "TYPE", "OS", "ARCH", "STATUS", "SIZE", "(GB)", "CREATED"]
    by_id = {row.split()[0]: row for row in rows}
    assert "CentOS 7.2  " in by_id["img-acme0004"] and " x86_64 " in by_id["img-acme0004"]
    assert " import failed " in by_id["img-acme0004"] and "import_failed" not in listed.out
    assert f" {size_in_gb(40 * 1024**3)} " in by_id["img-acme0002"] and " 40 " in by_id["img-acme0002"]
    as_json = {i["id"]: i for i in cli("image", "list", "--tenant", "acme", "--json").json()}
    assert as_json["img-acme0004"]["status"] == "import_failed"  # the contract's name
    assert as_json["img-acme0004"]["os_name"] == "CentOS 7.2 x86_64"


def test_image_show_text_names_each_field_in_people_s_words(cli: Any, catalog: Catalog, people: People) -> None:
    add_images(catalog)
    shown = cli("image", "show", "img-acme0004")
    assert shown.code == 0, shown.err
    lines = dict(line.split(":", 1) for line in shown.out.splitlines())
    assert lines["status"].strip() == "import failed"
    assert lines["reason"].strip() == "HTTP 404"
    assert lines["OS"].strip() == "CentOS 7.2" and lines["architecture"].strip() == "x86_64"
    assert lines["size (GB)"].strip() == "-" and lines["target size (GB)"].strip() == "20"


def test_a_refusal_names_the_status_as_people_read_it(cli: Any, catalog: Catalog, people: People) -> None:
    add_images(catalog)
    refused = cli("image", "download-link", "img-acme0004")
    assert refused.code == 5
    assert "image img-acme0004 is import failed; it can be downloaded only when available" in refused.err

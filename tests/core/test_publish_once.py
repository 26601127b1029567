"""An export made by two nodes at once: the first file published stays, the second is dropped, so
a file being hashed or served is never replaced under its reader."""

from __future__ import annotations

from pathlib import Path

from core.catalog.storage import Store


def test_the_first_file_published_stays_and_the_second_is_dropped(tmp_path: Path) -> None:
    final = tmp_path / "exports" / "img-1.qcow2"
    first, second = tmp_path / "a.staged", tmp_path / "b.staged"
    first.write_bytes(b"made by node A")
    second.write_bytes(b"made by node B")
    assert Store.publish_once(first, final) is True
    inode = final.stat().st_ino
    with final.open("rb") as reader:  # a reader (a checksum, a download) holds the file meanwhile
        assert Store.publish_once(second, final) is False
        assert reader.read() == b"made by node A"
    assert final.read_bytes() == b"made by node A" and final.stat().st_ino == inode
    assert not first.exists() and not second.exists()

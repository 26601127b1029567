"""The Excel export read back with openpyxl: header, one row per visible image, real dates, no other tenant."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from core.catalog.catalog import Catalog
from core.catalog.errors import Forbidden, Invalid
from core.catalog.models import Status
from core.images.export_xlsx import export_xlsx
from core.images.images import ImageQuery
from core.images.workbook import HEADERS
from tests.conftest import BACKENDS, People
from tests.factories import make_image

pytestmark = BACKENDS


def test_export_reads_back(catalog: Catalog, people: People, tmp_path: Path):
    mine = {
        make_image(catalog, people.owner, Status.AVAILABLE, name="acme-ready", with_file=True, size_gb=20),
        make_image(catalog, people.owner, Status.IMPORTING, name="acme-coming"),
    }
    make_image(catalog, people.owner, Status.DELETED, name="acme-bin")
    make_image(catalog, people.other_owner, Status.AVAILABLE, name="globex-secret")
    path = catalog.store.exports_dir / "images.xlsx"  # a non-admin writes only there (L6)
    assert export_xlsx(catalog, people.viewer, path) == 2
    sheet = load_workbook(path).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == HEADERS
    assert all(cell.font.b for cell in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:I3"
    assert sheet.column_dimensions["A"].width > 10
    body = rows[1:]
    assert {r[1] for r in body} == mine
    assert not any("globex" in str(cell) for row in body for cell in row)
    sizes = {}
    for row in body:
        assert row[2] == "Linux" and row[3] == "CentOS 7.9 x86_64"
        sizes[row[4]] = row[5]
        assert isinstance(row[7], datetime)
        assert row[8] == "acme"
        assert abs((datetime.utcnow() - row[7]).total_seconds()) < 600
    # Size (GB): the disk's virtual size, a number Excel sums and sorts; none yet while importing
    assert sizes == {"available": 20, "importing": None}
    assert not list(catalog.store.exports_dir.glob(".*.tmp"))


def test_an_admin_export_names_each_image_s_tenant(catalog: Catalog, people: People, tmp_path: Path):
    make_image(catalog, people.owner, Status.AVAILABLE, name="acme-web")
    make_image(catalog, people.other_owner, Status.AVAILABLE, name="globex-web")
    path = tmp_path / "all.xlsx"
    assert export_xlsx(catalog, people.admin, path) == 2
    rows = list(load_workbook(path).active.iter_rows(min_row=2, values_only=True))
    assert {(r[0], r[8]) for r in rows} == {("acme-web", "acme"), ("globex-web", "globex")}


def test_export_of_the_recycle_bin_and_a_filter(catalog: Catalog, people: People, tmp_path: Path):
    binned = make_image(catalog, people.owner, Status.DELETED, name="old")
    make_image(catalog, people.owner, Status.AVAILABLE, name="new")
    path = catalog.store.exports_dir / "bin.xlsx"
    assert export_xlsx(catalog, people.owner, path, ImageQuery(status="deleted")) == 1
    assert [r[1] for r in load_workbook(path).active.iter_rows(min_row=2, values_only=True)] == [binned]


def test_export_refuses_a_bad_path_and_leaves_nothing(catalog: Catalog, people: People, tmp_path: Path):
    with pytest.raises(Invalid, match="must end in .xlsx"):
        export_xlsx(catalog, people.owner, tmp_path / "images.csv")
    with pytest.raises(Invalid, match="does not exist"):
        export_xlsx(catalog, people.owner, catalog.store.exports_dir / "missing" / "images.xlsx")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "imagehub.toml", tmp_path / "var"]
    assert list(catalog.store.exports_dir.iterdir()) == []


def test_l6_a_non_admin_may_not_name_a_path_outside_exports(catalog: Catalog, people: People, tmp_path: Path):
    store = catalog.store
    (store.exports_dir / "out").symlink_to(store.images_dir)
    answers = set()
    for target in (
        store.images_dir / "x.xlsx",
        store.exports_dir / ".." / "images" / "x.xlsx",
        store.exports_dir / "out" / "x.xlsx",
        tmp_path / "x.xlsx",
        Path("/nonexistent/x.xlsx"),
    ):
        with pytest.raises(Forbidden, match="may write exports only inside") as refused:
            export_xlsx(catalog, people.viewer, target)
        answers.add(str(refused.value))
    assert len(answers) == 1  # the same whether the folder exists or not
    assert list(store.images_dir.iterdir()) == [] and not (tmp_path / "x.xlsx").exists()
    assert export_xlsx(catalog, people.admin, tmp_path / "x.xlsx") == 0  # a platform admin: anywhere


def test_user_text_never_becomes_a_formula(catalog: Catalog, people: People, tmp_path: Path):
    from core.images.images import edit_image

    image_id = make_image(catalog, people.owner, Status.AVAILABLE, name="x")
    edit_image(catalog, people.owner, image_id, name='=HYPERLINK("http://evil","x")', description="=1+1")
    path = catalog.store.exports_dir / "images.xlsx"
    export_xlsx(catalog, people.owner, path)
    row = load_workbook(path).active[2]
    assert (row[0].value, row[0].data_type) == ('=HYPERLINK("http://evil","x")', "s")
    assert (row[6].value, row[6].data_type) == ("=1+1", "s")


def test_refusals_leave_no_file_and_no_noise(catalog: Catalog, people: People, tmp_path: Path, capfd):
    from core.catalog.errors import Failed, NotFound

    with pytest.raises(NotFound):
        export_xlsx(catalog, people.owner, catalog.store.exports_dir / "x.xlsx", ImageQuery(tenant="globex"))
    with pytest.raises(Failed, match="cannot write"):
        export_xlsx(catalog, people.admin, Path("/proc/x.xlsx"))
    import gc

    gc.collect()
    assert "Exception ignored" not in capfd.readouterr().err
    assert not (catalog.store.exports_dir / "x.xlsx").exists()


def test_l6_workbook_link_lives_while_its_maker_sees_the_list(catalog: Catalog, people: People):
    from core.accounts.accounts import delete_account
    from core.links import links
    from core.links.links import Refused
    from core.links.workbooks import create_workbook_link

    make_image(catalog, people.owner, Status.AVAILABLE, name="acme-web")
    created = create_workbook_link(catalog, people.viewer)
    served = links.validate_token(catalog, created.token, created.view["filename"])
    assert served.path.parent == catalog.settings.data_dir / "workbooks" / created.view["id"]
    assert [r[0] for r in load_workbook(served.path).active.iter_rows(min_row=2, values_only=True)] == ["acme-web"]
    assert created.view["rows"] == 1 and created.view["size"] == served.path.stat().st_size
    with pytest.raises(Refused):  # only the workbook and its checksum are behind the token
        links.validate_token(catalog, created.token, "catalog.db")
    delete_account(catalog, people.admin, "acme-viewer")
    with pytest.raises(Refused) as refused:
        links.validate_token(catalog, created.token)
    assert refused.value.reason in ("access_lost", "revoked")
    assert links.get_link(catalog, people.admin, created.view["id"])["state"] in ("access_lost", "revoked")


def test_l6_a_refused_workbook_leaves_no_file_and_no_link(catalog: Catalog, people: People):
    from core.catalog.errors import NotFound
    from core.links.links import list_links
    from core.links.workbooks import create_workbook_link

    with pytest.raises(NotFound, match="tenant globex not found"):
        create_workbook_link(catalog, people.owner, ImageQuery(tenant="globex"))
    folder = catalog.settings.data_dir / "workbooks"
    assert not folder.exists() or list(folder.iterdir()) == []
    assert list_links(catalog, people.admin) == []


def _reference_workbook(views: list[dict], target: Path, status_label: dict[str, str] | None = None) -> None:
    """The export as it was written before the bulk rework (a WriteOnlyCell per date): the reference the
    new writer must match cell for cell."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    from core.images.workbook import DATE_FORMAT, WIDTHS

    def text(sheet: object, value: str) -> object:
        if value.startswith("="):
            cell = WriteOnlyCell(sheet, value=value)  # type: ignore[arg-type]
            cell.data_type = "s"
            return cell
        return value

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Images")
    for index, width in enumerate(WIDTHS, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.freeze_panes = "A2"
    header = []
    for title in HEADERS:
        cell = WriteOnlyCell(sheet, value=title)
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.append(header)
    for image in views:
        created = WriteOnlyCell(sheet, value=datetime.fromisoformat(image["created_at"].rstrip("Z")))
        created.number_format = DATE_FORMAT
        status = image["status"]
        sheet.append([
            text(sheet, image["name"]), image["id"], image["os_type"], image["os_name"],
            status_label.get(status, status) if status_label else status,
            None if image["virtual_size"] is None else round(image["virtual_size"] / (1 << 30), 2),
            text(sheet, image["description"]),
            created, image["tenant"],
        ])  # fmt: skip
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(HEADERS))}{len(views) + 1}"
    workbook.save(target)


def _cells(path: Path) -> list[list[tuple]]:
    sheet = load_workbook(path).active
    return [
        [(c.value, c.data_type, c.number_format, c.font.b, c.alignment.horizontal) for c in row]
        for row in sheet.iter_rows()
    ]


def test_workbook_cells_types_and_styles_are_those_of_the_reference_writer(
    catalog: Catalog, people: People, tmp_path: Path
):
    from core.images.images import edit_image, list_images

    for n, status in enumerate((Status.AVAILABLE, Status.IMPORTING, Status.IMPORT_FAILED)):
        make_image(catalog, people.owner, status, name=f"acme-{n}")
    odd = make_image(catalog, people.other_owner, Status.AVAILABLE, name="globex")
    edit_image(catalog, people.admin, odd, name="=SUM(1,2)", description="  naïve ✓ \t")
    labels = {"available": "Available", "importing": "Importing…"}
    for label in (None, labels):
        new = tmp_path / f"new-{bool(label)}.xlsx"
        old = tmp_path / f"old-{bool(label)}.xlsx"
        from core.images.export_xlsx import write_workbook

        assert write_workbook(catalog, people.admin, new, status_label=label) == 4
        _reference_workbook(list_images(catalog, people.admin), old, label)
        assert _cells(new) == _cells(old)
        sheet, reference = load_workbook(new).active, load_workbook(old).active
        assert (sheet.freeze_panes, sheet.auto_filter.ref) == (reference.freeze_panes, reference.auto_filter.ref)
        widths = [sheet.column_dimensions[c].width for c in "ABCDEFGHI"]
        assert widths == [reference.column_dimensions[c].width for c in "ABCDEFGHI"]


def test_owasp_leading_characters_stay_text(catalog: Catalog, people: People):
    from core.images.images import edit_image

    values = ["=1+1", "+1+1", "-1+1", "@SUM(1,1)", "=x", "-"]
    for value in values:
        image_id = make_image(catalog, people.owner, Status.AVAILABLE, name="x")
        edit_image(catalog, people.owner, image_id, name=value, description=value)
    path = catalog.store.exports_dir / "images.xlsx"
    assert export_xlsx(catalog, people.owner, path) == len(values)
    rows = list(load_workbook(path).active.iter_rows(min_row=2))
    assert sorted((row[0].value, row[0].data_type) for row in rows) == sorted((v, "s") for v in values)
    assert sorted((row[6].value, row[6].data_type) for row in rows) == sorted((v, "s") for v in values)

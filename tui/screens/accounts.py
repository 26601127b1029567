"""Tenants, accounts and their SSH keys: what `imagehub tenant` and `imagehub account` do, for admins who
reach imagehub only through the SSH door, where there is no shell.

Core decides who may do what and says why not: every action is offered to every account, and a refusal
(not an admin, a name taken, a key that is not a key, an admin deleting itself) shows as a notification
with core's reason. The lists show what core lists for the account: an admin everything, an owner its
tenant, a member itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, ContentSwitcher, DataTable, Header, Input, Label, Select, Static, Tab, Tabs

from core.accounts.accounts import (
    create_account,
    create_tenant,
    delete_account,
    list_accounts,
    list_tenants,
    set_account,
)
from core.accounts.keys import MAX_KEY_BYTES, add_key, list_keys, parse_public_key, remove_key
from core.catalog.catalog import Catalog
from core.catalog.errors import ImagehubError
from core.catalog.models import Perm, Role
from core.rules.access import Actor
from tui.i18n import N_, _, tr
from tui.screens.base import BaseScreen, SubmitForm, report_error
from tui.screens.confirm import DIALOG_CSS, ConfirmScreen
from tui.widgets.footer import FittingFooter
from tui.widgets.format import fit, plain, short_time

WIDE = 118  # from this many columns on, every column shows (as in the image and VM lists)

# Core's words for roles and perms as users say them; `_()` at use.
ROLE_LABELS: dict[str, str] = {
    Role.ADMIN: N_("platform admin"),
    Role.OWNER: N_("tenant owner"),
    Role.MEMBER: N_("member"),
}
PERM_LABELS: dict[str, str] = {Perm.VIEW: N_("view"), Perm.MANAGE: N_("manage")}

# column key -> (title, width narrow, width wide); width 0 hides the column
ACCOUNT_COLUMNS: tuple[tuple[str, str, int, int], ...] = (
    ("name", N_("Name"), 18, 24),
    ("tenant", N_("Tenant"), 16, 20),
    ("role", N_("Role"), 14, 16),
    ("perm", N_("Permission"), 10, 12),
    ("keys", N_("SSH keys"), 8, 8),
    ("created", N_("Created"), 0, 16),
)
KEY_COLUMNS: tuple[tuple[str, str, int, int], ...] = (
    ("fingerprint", N_("Fingerprint"), 50, 50),
    ("type", N_("Type"), 0, 19),
    ("comment", N_("Comment"), 20, 24),
    ("created", N_("Added"), 0, 16),
)
TENANT_COLUMNS: tuple[tuple[str, str, int, int], ...] = (
    ("name", N_("Name"), 30, 40),
    ("accounts", N_("Accounts"), 10, 10),
    ("created", N_("Created"), 16, 16),
)
SECTIONS = ("accounts", "tenants")
# What each section offers; the other section's actions are hidden from its footer.
SECTION_ACTIONS = {
    "accounts": {"change", "delete", "add_key", "remove_key"},
    "tenants": set[str](),
}


def role_label(role: str) -> str:
    return _(ROLE_LABELS.get(role, role))


def perm_label(account: dict[str, Any]) -> str:
    """A member's perm; owners and admins manage everything they see."""
    if account["perm"]:
        return _(PERM_LABELS.get(account["perm"], account["perm"]))
    return _("everything")


@dataclass
class Directory:
    """What the screen shows, as core lists it for the account."""

    tenants: list[dict[str, Any]]
    accounts: list[dict[str, Any]]
    keys: dict[str, list[dict[str, Any]] | None]  # account name -> its keys (None: core would not list them)


def read_directory(catalog: Catalog, actor: Actor) -> Directory:
    accounts = list_accounts(catalog, actor)
    keys: dict[str, list[dict[str, Any]] | None] = {}
    for account in accounts:
        try:
            keys[account["name"]] = list_keys(catalog, actor, account["name"])
        except ImagehubError:  # deleted since the list was read, say
            keys[account["name"]] = None
    return Directory(list_tenants(catalog, actor), accounts, keys)


def _columns(columns: tuple[tuple[str, str, int, int], ...], wide: bool) -> list[tuple[str, str, int]]:
    chosen = [(key, title, wide_width if wide else narrow) for key, title, narrow, wide_width in columns]
    return [column for column in chosen if column[2]]


class AccountsScreen(BaseScreen):
    """Two sections: accounts with the SSH keys of the one under the cursor, and tenants."""

    DEFAULT_CSS = """
    AccountsScreen Tabs { height: 2; }
    AccountsScreen ContentSwitcher { height: 1fr; }
    AccountsScreen #accounts-pane, AccountsScreen #tenants-pane { height: 1fr; }
    AccountsScreen #accounts-table, AccountsScreen #tenants-table { height: 1fr; }
    AccountsScreen #keys-title { height: 1; padding: 0 1; background: $boost; text-style: bold; }
    AccountsScreen #keys-table { height: auto; max-height: 7; }
    AccountsScreen #accounts-status { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    """

    BINDINGS = [
        Binding("n", "new", N_("New"), id="accounts.new", tooltip=N_("Create a tenant or an account")),
        Binding("e", "change", N_("Edit"), id="accounts.change", tooltip=N_("Change the permission or the tenant")),
        Binding("d", "delete", N_("Delete"), id="accounts.delete", tooltip=N_("Delete the account and cut its access")),
        Binding("k", "add_key", N_("Add key"), id="accounts.key_add", tooltip=N_("Register an SSH public key")),
        Binding(
            "x,delete",
            "remove_key",
            N_("Remove key"),
            id="accounts.key_remove",
            tooltip=N_("Remove the SSH key under the cursor"),
            key_display="x",
        ),
        # t and a are named on the section tabs, not in the footer (no room for them at 80 columns)
        Binding(
            "t", "section('tenants')", N_("Tenants"), id="accounts.tenants", tooltip=N_("Show the tenants"), show=False
        ),
        Binding(
            "a",
            "section('accounts')",
            N_("Accounts"),
            id="accounts.accounts",
            tooltip=N_("Show the accounts"),
            show=False,
        ),
        Binding("ctrl+r", "reload", N_("Refresh"), id="accounts.refresh", tooltip=N_("Reload the lists"), show=False),
        Binding("escape,q", "back", N_("Back"), id="accounts.back", tooltip=N_("Back to the images")),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.section = "accounts"
        self.directory = Directory([], [], {})
        self._wide: bool | None = None
        self._closed = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▣")
        yield Tabs(
            Tab(plain(f"{_('Accounts')} (a)"), id="section-accounts"),
            Tab(plain(f"{_('Tenants')} (t)"), id="section-tenants"),
            id="sections",
        )
        with ContentSwitcher(initial="accounts-pane"):
            with Vertical(id="accounts-pane"):
                yield DataTable(cursor_type="row", zebra_stripes=True, id="accounts-table")
                yield Static("", id="keys-title")
                yield DataTable(cursor_type="row", id="keys-table")
            with Vertical(id="tenants-pane"):
                yield DataTable(cursor_type="row", zebra_stripes=True, id="tenants-table")
        yield Static("", id="accounts-status")
        yield FittingFooter()

    def table(self, name: str) -> DataTable[Any]:
        return self.query_one(f"#{name}-table", DataTable)

    def on_mount(self) -> None:
        app: Any = self.app
        self.title = "imagehub"
        self.sub_title = _("accounts · account {account}").format(account=app.actor.name)
        self.query_one(Tabs).can_focus = False
        self._setup_columns()
        self.table("accounts").focus()
        self.reload()

    def on_unmount(self) -> None:
        self._closed = True

    def on_resize(self) -> None:
        if (self.size.width >= WIDE) != self._wide:
            self._setup_columns()
            self._show(self.directory)

    # ---- sections -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "section":
            return parameters[0] != self.section
        other = next(name for name in SECTIONS if name != self.section)
        return action not in SECTION_ACTIONS[other]

    def action_section(self, name: str) -> None:
        self.query_one(Tabs).active = f"section-{name}"

    @on(Tabs.TabActivated, "#sections")
    def _section_chosen(self, event: Tabs.TabActivated) -> None:
        self.section = (event.tab.id or "section-accounts").removeprefix("section-")
        self.query_one(ContentSwitcher).current = f"{self.section}-pane"
        self.table(self.section).focus()
        self._update_status()
        self.refresh_bindings()

    # ---- the tables -----------------------------------------------------------------------

    def _setup_columns(self) -> None:
        self._wide = self.size.width >= WIDE if self.size.width else False
        for name, columns in (("accounts", ACCOUNT_COLUMNS), ("keys", KEY_COLUMNS), ("tenants", TENANT_COLUMNS)):
            table = self.table(name)
            table.clear(columns=True)
            for key, title, width in _columns(columns, self._wide):
                table.add_column(_(title), width=width, key=key)

    def _account_cells(self, account: dict[str, Any]) -> list[Text]:
        keys = self.directory.keys.get(account["name"])
        values = {
            "name": account["name"],
            "tenant": account["tenant"] or "–",
            "role": role_label(account["role"]),
            "perm": perm_label(account),
            "keys": "–" if keys is None else str(len(keys)),
            "created": short_time(account["created_at"]),
        }
        return [plain(fit(values[key], width)) for key, _title, width in _columns(ACCOUNT_COLUMNS, bool(self._wide))]

    def _key_cells(self, key: dict[str, Any]) -> list[Text]:
        values = {
            "fingerprint": key["fingerprint"],
            "type": key["type"],
            "comment": key["comment"] or "–",
            "created": short_time(key["created_at"]),
        }
        return [plain(fit(values[name], width)) for name, _title, width in _columns(KEY_COLUMNS, bool(self._wide))]

    def _tenant_cells(self, tenant: dict[str, Any]) -> list[Text]:
        members = sum(1 for account in self.directory.accounts if account["tenant"] == tenant["name"])
        values = {"name": tenant["name"], "accounts": str(members), "created": short_time(tenant["created_at"])}
        return [plain(fit(values[key], width)) for key, _title, width in _columns(TENANT_COLUMNS, bool(self._wide))]

    def _fill(self, name: str, rows: list[tuple[str, list[Text]]]) -> None:
        """Replace the rows of table `name`, keeping the cursor on the same row key where it still is."""
        table = self.table(name)
        current = self.current_key(name)
        previous_row = table.cursor_row
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        keys = [key for key, _cells in rows]
        if keys:
            row = keys.index(current) if current in keys else min(previous_row, len(keys) - 1)
            table.move_cursor(row=max(0, row), animate=False)

    def _show(self, directory: Directory) -> None:
        self.directory = directory
        self._fill("accounts", [(a["name"], self._account_cells(a)) for a in directory.accounts])
        self._fill("tenants", [(t["name"], self._tenant_cells(t)) for t in directory.tenants])
        self._render_keys()
        self._update_status()

    def _render_keys(self) -> None:
        account = self.current_account()
        keys = (self.directory.keys.get(account["name"]) if account else None) or []
        self._fill("keys", [(k["fingerprint"], self._key_cells(k)) for k in keys])
        if account is None:
            title = ""
        elif keys:
            title = _("SSH keys of {name}, for the admin SSH door").format(name=account["name"])
        else:
            title = _("{name} has no SSH key: k adds one").format(name=account["name"])
        self.query_one("#keys-title", Static).update(plain(title))

    def _update_status(self) -> None:
        if self.section == "tenants":
            line = _("{n} tenant(s)").format(n=len(self.directory.tenants))
        else:
            line = _("{n} account(s) · tab moves between the accounts and the keys").format(
                n=len(self.directory.accounts)
            )
        self.query_one("#accounts-status", Static).update(plain(line))

    @on(DataTable.RowHighlighted, "#accounts-table")
    def _account_highlighted(self) -> None:
        self._render_keys()

    def current_key(self, name: str) -> str | None:
        table = self.table(name)
        if not table.row_count or not 0 <= table.cursor_row < table.row_count:
            return None
        return str(table.ordered_rows[table.cursor_row].key.value)

    def current_account(self) -> dict[str, Any] | None:
        name = self.current_key("accounts")
        return next((a for a in self.directory.accounts if a["name"] == name), None)

    def current_ssh_key(self) -> dict[str, Any] | None:
        account = self.current_account()
        fingerprint = self.current_key("keys")
        keys = (self.directory.keys.get(account["name"]) if account else None) or []
        return next((k for k in keys if k["fingerprint"] == fingerprint), None)

    # ---- loading --------------------------------------------------------------------------

    def reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="accounts-list", exit_on_error=False)
    def _load(self) -> None:
        app: Any = self.app
        try:
            directory = read_directory(app.catalog, app.actor)
        except Exception as exc:
            app.call_from_thread(self._load_failed, exc)
            return
        app.call_from_thread(self._loaded, directory)

    def _loaded(self, directory: Directory) -> None:
        if not self._closed:
            self._show(directory)

    def _load_failed(self, exc: Exception) -> None:
        if not self._closed:
            report_error(self, exc, _("Accounts"))

    # ---- actions --------------------------------------------------------------------------

    def action_reload(self) -> None:
        self.reload()

    def action_back(self) -> None:
        self.dismiss(None)

    def _account_or_warn(self) -> dict[str, Any] | None:
        account = self.current_account()
        if account is None:
            self.app.notify(_("No account here."), severity="warning")
        return account

    def _after(self, message: str) -> Any:
        """A dialog's callback: notify `message` (formatted with the result) when it returns something."""

        def done(result: dict[str, Any] | None) -> None:
            if result is not None:
                self.app.notify(message.format(**result))
                self.reload()

        return done

    def action_new(self) -> None:
        tenants = [t["name"] for t in self.directory.tenants]
        if self.section == "tenants":
            self.app.push_screen(TenantCreateScreen(), self._after(_("Created tenant {name}.")))
            return
        current = self.current_account()
        tenant = current["tenant"] if current else None
        self.app.push_screen(AccountCreateScreen(tenants, tenant), self._after(_("Created account {name}.")))

    def action_change(self) -> None:
        account = self._account_or_warn()
        if account is None:
            return
        if account["role"] == Role.ADMIN:
            message = _("{name} is a platform admin: it belongs to no tenant and manages everything.")
            self.app.notify(message.format(name=account["name"]), severity="warning")
            return
        tenants = [t["name"] for t in self.directory.tenants]
        self.app.push_screen(AccountSetScreen(account, tenants), self._after(_("Saved account {name}.")))

    def action_delete(self) -> None:
        if self.focused is self.table("keys"):  # d among the keys means the key, as x does
            self.action_remove_key()
            return
        account = self._account_or_warn()
        if account is None:
            return
        name = account["name"]

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete_account(name)

        where = account["tenant"] or "–"
        self.app.push_screen(
            ConfirmScreen(
                _("Delete account {name}?").format(name=name),
                [
                    _("{name} · {role} · tenant {tenant}").format(
                        name=name, role=role_label(account["role"]), tenant=where
                    ),
                    _("Its SSH keys are removed and its admin SSH sessions end."),
                    _("Every link it made is revoked; downloads under way stop within seconds."),
                    _("Its images stay with the tenant; the audit trail keeps its name."),
                    _("The name can be given to a new account later, which inherits nothing."),
                ],
                yes=_("Delete"),
            ),
            answered,
        )

    @work(thread=True, group="accounts-action", exit_on_error=False)
    def _delete_account(self, name: str) -> None:
        app: Any = self.app
        try:
            deleted = delete_account(app.catalog, app.actor, name)
        except Exception as exc:
            app.call_from_thread(self._action_failed, exc, _("Delete account"))
            return
        message = _("Deleted account {name}: {keys} key(s) removed, {links} link(s) revoked.").format(
            name=name, keys=deleted["keys_removed"], links=deleted["links_revoked"]
        )
        app.call_from_thread(self._action_done, message)

    def action_add_key(self) -> None:
        account = self._account_or_warn()
        if account is not None:
            self.app.push_screen(KeyAddScreen(account["name"]), self._after(_("Added key {fingerprint} to {account}.")))

    def action_remove_key(self) -> None:
        account = self._account_or_warn()
        if account is None:
            return
        key = self.current_ssh_key()
        if key is None:
            self.app.notify(_("{name} has no SSH key.").format(name=account["name"]), severity="warning")
            return
        name, fingerprint = account["name"], key["fingerprint"]

        def answered(yes: bool | None) -> None:
            if yes:
                self._remove_key(name, fingerprint)

        self.app.push_screen(
            ConfirmScreen(
                _("Remove an SSH key of {name}?").format(name=name),
                [fingerprint, key["comment"] or key["type"]],
                question=_("This key will no longer open the admin SSH door."),
                yes=_("Remove"),
            ),
            answered,
        )

    @work(thread=True, group="accounts-action", exit_on_error=False)
    def _remove_key(self, name: str, fingerprint: str) -> None:
        app: Any = self.app
        try:
            remove_key(app.catalog, app.actor, name, fingerprint)
        except Exception as exc:
            app.call_from_thread(self._action_failed, exc, _("Remove key"))
            return
        message = _("Removed key {fingerprint} from {name}.").format(fingerprint=fingerprint, name=name)
        app.call_from_thread(self._action_done, message)

    def _action_done(self, message: str) -> None:
        self.app.notify(message)
        if not self._closed:
            self.reload()

    def _action_failed(self, exc: Exception, doing: str) -> None:
        report_error(self, exc, doing)
        if not self._closed:
            self.reload()


# ---- the dialogs ------------------------------------------------------------------------------


class FormScreen(SubmitForm):
    """A dialog whose fields go to one core call in a worker. A refusal shows core's reason and the
    dialog stays open, so the admin can correct it; done, it returns core's answer (a dict)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="FormScreen") + "FormScreen Select { margin-bottom: 1; }"
    BINDINGS = [
        Binding("escape,q", "cancel", N_("Cancel"), id="form.cancel", tooltip=N_("Close without saving")),
        Binding("ctrl+s", "save", N_("Save"), id="form.save", tooltip=N_("Save and close")),
    ]
    SUBMIT = "save"
    doing = ""  # what a refusal's notification is titled with (untranslated)
    save_label = N_("Save")
    first_field = "#name"  # the field focused on opening

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(plain(self.title_text()), classes="dialog-title")
            yield from self.fields()
            yield Static("", classes="dialog-message", id="form-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(_("Cancel"), id="cancel", compact=True)
                yield Button(_(self.save_label), id="save", variant="primary", compact=True)

    def title_text(self) -> str:
        raise NotImplementedError

    def fields(self) -> ComposeResult:
        raise NotImplementedError

    def values(self) -> dict[str, Any]:
        """The fields' values, read on the UI thread."""
        raise NotImplementedError

    def submit(self, catalog: Catalog, actor: Actor, values: dict[str, Any]) -> dict[str, Any] | None:
        """Core's call, in a worker thread; None: nothing to do (the dialog closes)."""
        raise NotImplementedError

    def on_mount(self) -> None:
        self.query_one(self.first_field).focus()

    def action_save(self) -> None:
        save = self.query_one("#save", Button)
        if not save.disabled:
            save.disabled = True
            self._save(self.values())

    @work(thread=True, exclusive=True, group="form", exit_on_error=False)
    def _save(self, values: dict[str, Any]) -> None:
        app: Any = self.app
        try:
            result = self.submit(app.catalog, app.actor, values)
        except Exception as exc:
            app.call_from_thread(self._failed, exc)
            return
        app.call_from_thread(self.dismiss, result)

    def _failed(self, exc: Exception) -> None:
        self.query_one("#save", Button).disabled = False
        if isinstance(exc, ImagehubError):
            self.query_one("#form-message", Static).update(plain(tr(exc)))
        report_error(self, exc, _(self.doing))


def _options(labels: dict[str, str]) -> list[tuple[Text, str]]:
    return [(plain(_(label)), str(value)) for value, label in labels.items()]


def _tenant_select(tenants: list[str], current: str | None, *, disabled: bool = False) -> Select[str]:
    options = [(plain(name), name) for name in tenants]
    if not options:
        return Select(options, prompt=_("no tenant yet: create one first"), id="tenant", compact=True)
    value = current if current in tenants else tenants[0]
    return Select(options, allow_blank=False, value=value, id="tenant", compact=True, disabled=disabled)


class TenantCreateScreen(FormScreen):
    """Create a tenant (platform admins; core refuses anyone else)."""

    doing = N_("New tenant")
    save_label = N_("Create")

    def title_text(self) -> str:
        return _("New tenant")

    def fields(self) -> ComposeResult:
        yield Static(plain(_("Name (letters, digits, '-', '_' or '.')")))
        yield Input(id="name", compact=True, max_length=64)

    def values(self) -> dict[str, Any]:
        return {"name": self.query_one("#name", Input).value}

    def submit(self, catalog: Catalog, actor: Actor, values: dict[str, Any]) -> dict[str, Any] | None:
        return create_tenant(catalog, actor, values["name"])


class AccountCreateScreen(FormScreen):
    """Create an account: name, role, tenant (owners and members) and perm (members), as
    `imagehub account create` takes them."""

    doing = N_("New account")
    save_label = N_("Create")

    def __init__(self, tenants: list[str], tenant: str | None) -> None:
        super().__init__()
        self.tenants = tenants
        self.tenant = tenant

    def title_text(self) -> str:
        return _("New account")

    def fields(self) -> ComposeResult:
        yield Static(plain(_("Name (letters, digits, '-', '_' or '.')")))
        yield Input(id="name", compact=True, max_length=64)
        yield Static(plain(_("Role")))
        yield Select(_options(ROLE_LABELS), allow_blank=False, value=Role.MEMBER, id="role", compact=True)
        yield Static(plain(_("Tenant (platform admins belong to none)")))
        yield _tenant_select(self.tenants, self.tenant)
        yield Static(plain(_("Permission (members; owners and admins manage everything they see)")))
        yield Select(_options(PERM_LABELS), allow_blank=False, value=Perm.VIEW, id="perm", compact=True)

    @on(Select.Changed, "#role")
    def _role_changed(self, event: Select.Changed) -> None:
        self.query_one("#tenant", Select).disabled = event.value == Role.ADMIN
        self.query_one("#perm", Select).disabled = event.value != Role.MEMBER

    def values(self) -> dict[str, Any]:
        role = str(self.query_one("#role", Select).value)
        tenant = self.query_one("#tenant", Select).value
        return {
            "name": self.query_one("#name", Input).value,
            "role": role,
            "tenant": None if role == Role.ADMIN or tenant is Select.NULL else str(tenant),
            "perm": str(self.query_one("#perm", Select).value) if role == Role.MEMBER else None,
        }

    def submit(self, catalog: Catalog, actor: Actor, values: dict[str, Any]) -> dict[str, Any] | None:
        return create_account(
            catalog, actor, values["name"], tenant=values["tenant"], role=values["role"], perm=values["perm"]
        )


class AccountSetScreen(FormScreen):
    """What `imagehub account set` changes: a member's perm, an account's tenant (core: admins only)."""

    doing = N_("Change account")
    first_field = "#tenant"

    def __init__(self, account: dict[str, Any], tenants: list[str]) -> None:
        super().__init__()
        self.account = account
        self.tenants = tenants

    def title_text(self) -> str:
        return _("Change account {name} ({role})").format(
            name=self.account["name"], role=role_label(self.account["role"])
        )

    def fields(self) -> ComposeResult:
        yield Static(plain(_("Tenant (moving an account ends its sessions and stops its links there)")))
        yield _tenant_select(self.tenants, self.account["tenant"])
        if self.account["role"] == Role.MEMBER:
            yield Static(plain(_("Permission")))
            yield Select(_options(PERM_LABELS), allow_blank=False, value=self.account["perm"], id="perm", compact=True)

    def values(self) -> dict[str, Any]:
        tenant = self.query_one("#tenant", Select).value
        perms = self.query("#perm").results(Select)
        perm = next((str(select.value) for select in perms), None)
        return {
            "tenant": str(tenant) if tenant is not Select.NULL and tenant != self.account["tenant"] else None,
            "perm": perm if perm != self.account["perm"] else None,
        }

    def submit(self, catalog: Catalog, actor: Actor, values: dict[str, Any]) -> dict[str, Any] | None:
        if values["tenant"] is None and values["perm"] is None:
            return None  # nothing changed: nothing to ask core
        return set_account(catalog, actor, self.account["name"], perm=values["perm"], tenant=values["tenant"])


class KeyAddScreen(FormScreen):
    """Register an OpenSSH public key pasted as one line; core reads and checks it."""

    doing = N_("Add key")
    save_label = N_("Add")
    first_field = "#key"

    def __init__(self, account: str) -> None:
        super().__init__()
        self.account = account

    def title_text(self) -> str:
        return _("Add an SSH key to {name}").format(name=self.account)

    def fields(self) -> ComposeResult:
        yield Static(plain(_("Public key: paste one line, such as the content of ~/.ssh/id_ed25519.pub")))
        yield Input(id="key", compact=True, max_length=MAX_KEY_BYTES, placeholder="ssh-ed25519 AAAA… you@host")
        yield Static("", id="key-check")

    @on(Input.Changed, "#key")
    def _key_changed(self, event: Input.Changed) -> None:
        """Core's reading of the line as it is pasted: its fingerprint, or why it is not a key."""
        check = self.query_one("#key-check", Static)
        if not event.value.strip():
            check.update("")
            return
        try:
            _line, fingerprint, _comment = parse_public_key(event.value)
        except ImagehubError as exc:
            check.update(plain(tr(exc), "red"))
            return
        check.update(plain(_("fingerprint {fingerprint}").format(fingerprint=fingerprint), "green"))

    def values(self) -> dict[str, Any]:
        return {"key": self.query_one("#key", Input).value}

    def submit(self, catalog: Catalog, actor: Actor, values: dict[str, Any]) -> dict[str, Any] | None:
        return add_key(catalog, actor, self.account, io.BytesIO(values["key"].encode("utf-8")))

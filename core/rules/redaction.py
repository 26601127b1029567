"""What is never shown: a URL's password, query and fragment, which often carry a signature or a token."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """The URL as shown and stored for display: any password replaced by `***`
    (`ftp://user:***@host/...`), and so are the query and the fragment, which often carry a
    signature or a token (`https://bucket/x.qcow2?***`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    query = "***" if parts.query else ""
    fragment = "***" if parts.fragment else ""
    netloc = parts.netloc
    if parts.password is not None or "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))

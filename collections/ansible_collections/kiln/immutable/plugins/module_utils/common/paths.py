# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where kiln keeps its state: the state folder and the default catalog."""

from __future__ import annotations

import os


def state_dir() -> str:
    """The folder for the catalog, build logs and roll-out journals.

    ``$KILN_STATE_DIR`` when set, else ``.kiln`` in the current directory.
    """
    return os.path.abspath(os.environ.get("KILN_STATE_DIR") or ".kiln")


DATABASE_SCHEMES = ("postgresql", "postgres")


def is_database_url(location: str) -> bool:
    """True for a PostgreSQL connection URL (``postgresql://kiln@db/kiln``), False for a file path."""
    return location.partition(":")[0].lower() in DATABASE_SCHEMES


def catalog_location(given: str | None = None, state: str | None = None) -> str:
    """Which catalog: ``given`` (the ``catalog`` option, invoke's ``kiln.catalog``), else ``$KILN_CATALOG``,
    else ``catalog.db`` in the state folder. A PostgreSQL URL is kept as it is, a path made absolute."""
    location = given or os.environ.get("KILN_CATALOG") or os.path.join(state or state_dir(), "catalog.db")
    if is_database_url(location):
        return location
    return os.path.abspath(os.path.expanduser(location))

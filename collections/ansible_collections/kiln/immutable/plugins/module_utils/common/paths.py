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


def default_catalog_path() -> str:
    """``$KILN_CATALOG`` when set, else ``catalog.db`` in the state folder."""
    return os.path.abspath(os.environ.get("KILN_CATALOG") or os.path.join(state_dir(), "catalog.db"))

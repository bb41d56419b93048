# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who acts on the catalog: the one place that decides the principal recorded with every change."""

from __future__ import annotations

import getpass
import os


def principal() -> str:
    """``$KILN_PRINCIPAL`` (a CI identity) when set, else the OS user."""
    explicit = os.environ.get("KILN_PRINCIPAL")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return f"uid:{os.getuid()}"

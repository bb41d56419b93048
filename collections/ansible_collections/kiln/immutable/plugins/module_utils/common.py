# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pieces every part of the engine shares: the error type and where kiln keeps its state."""

from __future__ import annotations

import os


class KilnError(Exception):
    """An error a user can act on.

    The message names the file, line, parameter or operation at fault; ``details`` carries
    structured context (cmd, rc, stdout, stderr, path, ...) that modules pass to ``fail_json``.
    """

    def __init__(self, msg: str, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def fail_kwargs(self) -> dict:
        return {"msg": self.msg, **self.details}


def state_dir() -> str:
    """The folder for the catalog, build logs and roll-out journals.

    ``$KILN_STATE_DIR`` when set, else ``.kiln`` in the current directory.
    """
    return os.path.abspath(os.environ.get("KILN_STATE_DIR") or ".kiln")


def default_catalog_path() -> str:
    """``$KILN_CATALOG`` when set, else ``catalog.db`` in the state folder."""
    return os.path.abspath(os.environ.get("KILN_CATALOG") or os.path.join(state_dir(), "catalog.db"))

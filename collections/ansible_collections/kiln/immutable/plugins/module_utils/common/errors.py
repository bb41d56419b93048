# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The error every layer raises: one a user can act on."""

from __future__ import annotations


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

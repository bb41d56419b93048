# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The option every module that reads or writes the image catalog shares."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  catalog:
    description:
      - Path of the catalog file (SQLite), or the URL of a PostgreSQL catalog shared by a team
        (V(postgresql://kiln@db/kiln); libpq's environment such as E(PGHOST) and E(PGPASSFILE) fills in
        what the URL leaves out). Keep the password out of the URL, in E(PGPASSFILE).
      - When not set, the environment variable E(KILN_CATALOG), else C(catalog.db) in the state folder
        (E(KILN_STATE_DIR), else C(.kiln) in the current folder).
      - The file and its folder are created when missing.
    type: path
"""

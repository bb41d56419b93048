# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog's errors, shared by the stores and everything above them."""

from __future__ import annotations

from ..common.errors import KilnError


class CatalogError(KilnError):
    """Unknown image, version or channel; a refused move; a damaged or unreadable catalog."""


class CatalogBusy(CatalogError):
    """Another writer held the catalog for longer than the busy timeout: safe to retry."""

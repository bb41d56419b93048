# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy driven over its runtime API: servers added, enabled, drained and removed without a reload."""

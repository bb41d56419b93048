# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What sends traffic to a group's instances, one subpackage per kind (haproxy; target groups next)."""

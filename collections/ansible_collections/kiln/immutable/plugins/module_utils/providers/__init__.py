# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What starts and stops a group's instances, one subpackage per platform (docker; aws next)."""

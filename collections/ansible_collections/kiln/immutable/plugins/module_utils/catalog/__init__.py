# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image catalog: versions, channels, policy, revocation, retention, the audit trail, and its stores."""

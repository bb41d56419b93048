# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instances as EC2 instances of an Auto Scaling group; AMIs and their snapshots."""

# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The top of the engine: builds a group's provider and load balancer from their names and runs roll-outs."""

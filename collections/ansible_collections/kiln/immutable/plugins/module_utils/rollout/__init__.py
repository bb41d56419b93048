# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Roll-outs: the provider and load balancer interfaces, options and plan, the engine, health probes."""

# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test stage: Molecule runs of one version's artifact, and the package checks they use."""

# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The build stage: template model (python-hcl2), fingerprint, Packer runner, staging and the build flow."""

"""Stand-in for pip's get-pip.py bootstrap script, for ansible-test on machines that reach PyPI only.

ansible-test bootstraps pip into the virtual environments of its sanity tests by downloading get-pip.py
from a host outside PyPI. This does the same from what is at hand: pip from the standard library's
ensurepip, then the requested pip release from PyPI. Arguments are get-pip.py's: pip options and
requirements, plus --no-setuptools / --no-wheel, which ensurepip does not need.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)

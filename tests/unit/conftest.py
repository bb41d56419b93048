"""Unit tests mirror module_utils, one folder per subpackage. Fakes that several folders use
(rollout_fakes.py) sit here, and this folder goes on sys.path for them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

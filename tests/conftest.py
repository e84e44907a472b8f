from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from iemocap_fixture import write_iemocap  # noqa: E402


@pytest.fixture()
def iemocap_root(tmp_path: Path) -> Path:
    return write_iemocap(tmp_path)

import os

import pytest

from amx_export.plugins import library_path


def _require(kind: str):
    path = library_path(kind, required=False)
    if path is None:
        reason = f"lib{kind} not built (python -m amx_export build; scripts/test.sh does it)"
        if os.environ.get("AMX_REQUIRE_NATIVE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def kernels():
    from amx_export.plugins.native import Kernels

    return Kernels(_require("kernels"))


@pytest.fixture(scope="session")
def ort_library():
    return _require("ort")

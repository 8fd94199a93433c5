"""The breaking-change gate of ``make proto-breaking``: ``buf breaking``
compares proto/ with the committed baseline of the v1 contract
(proto/baseline/avtomatika-v1.binpb). Edits are made to a copy of the
workspace, never to the repository."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = Path(sysconfig.get_path("scripts")) / "buf"
BASELINE = Path("proto", "baseline", "avtomatika-v1.binpb")
JOB_SERVICE = Path("proto", "avtomatika", "v1", "job_service.proto")


def breaking(workspace: Path) -> subprocess.CompletedProcess[str]:
    """``buf breaking`` as the Makefile runs it, in ``workspace``."""
    return subprocess.run(
        [str(BUF), "breaking", "proto", "--against", str(BASELINE)],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of what buf reads: buf.yaml, proto/ (with the baseline), third_party/."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copytree(ROOT / "third_party", tmp_path / "third_party")
    return tmp_path


def edit(workspace: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in job_service.proto."""
    path = workspace / JOB_SERVICE
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))


def test_the_committed_contract_is_compatible_with_its_baseline() -> None:
    result = breaking(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("  string api_version = 1;", "  string api_ver = 1;", 'changed name from "api_version"'),
        ("  string api_version = 1;", "  string api_version = 7;", 'Previously present field "1"'),
        ("  string api_version = 1;", "  bytes api_version = 1;", "changed type"),
        ("  rpc GetDashboard(", "  rpc GetDashboards(", 'RPC "GetDashboard" on service'),
    ],
    ids=["renamed-field", "renumbered-field", "retyped-field", "renamed-rpc"],
)
def test_a_breaking_edit_fails_the_gate(
    workspace: Path, old: str, new: str, complaint: str
) -> None:
    edit(workspace, old, new)
    result = breaking(workspace)
    assert result.returncode != 0
    assert complaint in result.stdout


def test_an_added_field_passes_the_gate(workspace: Path) -> None:
    edit(
        workspace,
        "  string api_version = 1;",
        "  string api_version = 1;\n"
        "  // A field added in a compatible change.\n"
        "  string added = 99;",
    )
    result = breaking(workspace)
    assert result.returncode == 0, result.stdout + result.stderr

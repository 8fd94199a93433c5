"""The built wheel carries the generated protobuf package inside
``avtomatika``: both imports work from an installed wheel, not only from the
source tree."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_wheel_installs_and_imports_both_packages(tmp_path: Path) -> None:
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation"]
    subprocess.run([*build, "--outdir", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("avtomatika-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Install the wheel itself with this interpreter's pip, without its
    # dependencies; those come from this environment through a .pth line
    # (a plain path entry: this environment's editable-install hook is not
    # run, so the source tree stays invisible to the throwaway venv).
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*pip, "--target", target, str(wheel)], check=True, capture_output=True)
    Path(target, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    probe = (
        "import avtomatika, avtomatika.v1.job_pb2 as j\n"
        "from avtomatika import StateMachineBlueprint\n"
        "from avtomatika.v1 import worker_service_pb2_grpc\n"
        "print(avtomatika.__file__); print(j.__file__)\n"
    )
    result = subprocess.run(
        [str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    package_file, generated_file = result.stdout.split()
    assert package_file.startswith(target)
    assert generated_file.startswith(target)
    assert Path(generated_file).parent == Path(package_file).parent / "v1"


def test_editable_install_imports_both_packages_from_anywhere(tmp_path: Path) -> None:
    probe = "import avtomatika.v1.job_pb2 as j, avtomatika; print(avtomatika.__file__, j.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    package_file, generated_file = result.stdout.split()
    assert Path(package_file) == ROOT / "avtomatika" / "__init__.py"
    assert Path(generated_file) == ROOT / "generated" / "avtomatika" / "v1" / "job_pb2.py"

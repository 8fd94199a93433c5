"""Package discovery: every package under avtomatika/ is found, never listed
by hand (a hand-kept list once left avtomatika.cluster out of the wheel).

The generated protobuf package is the one exception: it lives apart in
generated/ (never edited by hand) and is mapped into the package as
avtomatika.v1 by pyproject.toml's package-dir.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["avtomatika", "avtomatika.*"]), "avtomatika.v1"])

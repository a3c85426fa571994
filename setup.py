"""stalwart-mp: a complete mail server in Python (the Python counterpart of Stalwart).

The gRPC stubs of the control plane are generated from proto/ by grpcio-tools at build
time (``build_py``, also run by editable installs); they are never edited by hand.
"""
import sys
from pathlib import Path

from setuptools import Command, find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # stalwart_mp_build.py, next to this file, runs at build time


def _requirements(name: str) -> list[str]:
    """Pinned requirement lines of requirements/NAME.txt, without comments and includes."""
    out = []
    for line in (HERE / "requirements" / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            out.append(line)
    return out


class GenerateProto(Command):
    """Compile proto/**/*.proto into stalwart_mp/control/gen (python + grpc stubs)."""

    description = "generate gRPC stubs from proto/"
    user_options: list = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        from stalwart_mp_build import generate_stubs  # noqa: PLC0415  (build-time only)

        generate_stubs(HERE)


class BuildPy(build_py):
    """build_py that generates the stubs first and packages them.

    ``packages`` is computed when setup.py is read, before the stubs exist (fresh clone,
    sdist): the generated sub-packages are added here, after generation.
    """

    def run(self) -> None:
        self.run_command("generate_proto")
        generated = find_packages(
            str(HERE), include=["stalwart_mp.control.gen", "stalwart_mp.control.gen.*"]
        )
        packages = list(self.packages or [])
        packages += [p for p in generated if p not in packages]
        self.packages = self.distribution.packages = packages
        super().run()


setup(
    name="stalwart-mp",
    version="0.1.0",
    description="A complete, production-grade mail server in Python",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["stalwart_mp", "stalwart_mp.*", "admin_web", "admin_web.*"]),
    py_modules=["stalwart_mp_build"],
    include_package_data=True,
    package_data={"stalwart_mp": ["py.typed", "control/gen/**/*.pyi"]},
    install_requires=_requirements("base.txt"),
    extras_require={
        "backends": _requirements("backends.txt"),
        "dev": _requirements("backends.txt") + _requirements("dev.txt"),
    },
    entry_points={
        "console_scripts": [
            "stalwart-mp = stalwart_mp.cli:main",
            "stalwart-mp-admin = stalwart_mp.admin_cli:main",
        ],
    },
    cmdclass={"generate_proto": GenerateProto, "build_py": BuildPy},
)

"""Build taskgeom's native modules with CMake + Ninja.

``pip install .`` configures ``CMakeLists.txt`` and builds two pybind11 modules:

* ``taskgeom._C``    C++17 + OpenMP kernels (always built);
* ``taskgeom._cuda`` CUDA kernels with a static CUDA runtime (built when a CUDA toolkit is found).

Environment switches:

* ``TASKGEOM_CUDA``: ``auto`` (default), ``1``/``on`` (fail if no toolkit), ``0``/``off``;
* ``TASKGEOM_CUDA_ARCHS``: CMake CUDA architectures, default ``80;90``;
* ``TASKGEOM_NATIVE``: ``1`` (default) compiles the CPU kernels for this machine's instruction set;
* ``TASKGEOM_FP64TC_ALL``: ``1`` compiles every fp64 tensor-core kernel instance (for the tuning sweep,
  bench/bench_fp64tc.py --sweep); default ``0``: only those the committed tuning table picks, and the default;
* ``TASKGEOM_BUILD_TYPE``: CMake build type, default ``Release``;
* ``CMAKE_ARGS``: extra arguments passed to CMake.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def _tool(name):
    """A build tool from PATH, or from its PyPI package installed in this environment."""
    found = shutil.which(name)
    if found:
        return found
    try:
        mod = __import__(name)
        path = Path(getattr(mod, "BIN_DIR", "")) / name
        if path.exists():
            return str(path)
    except ImportError:
        pass
    return None


class CMakeBuild(build_ext):
    """One CMake run builds every module; taskgeom._cuda exists only when CUDA was found."""

    def get_output_mapping(self):
        # editable installs copy each declared module; skip the CUDA one when it was not built
        mapping = super().get_output_mapping()
        return {dst: src for dst, src in mapping.items() if os.path.exists(src)}

    def copy_extensions_to_source(self):
        # editable installs copy each declared module into the source tree: skip the CUDA one when it was
        # not built (TASKGEOM_CUDA=0, or no toolkit found)
        built = [e for e in self.extensions if os.path.exists(self.get_ext_fullpath(e.name))]
        self.extensions, every = built, self.extensions
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = every

    def build_extension(self, ext):
        if ext.name != "taskgeom._C":
            return  # built by the same CMake run as taskgeom._C
        import pybind11

        cmake = _tool("cmake")
        if cmake is None:
            raise RuntimeError("taskgeom needs CMake >= 3.18 to build (pip install cmake, or apt-get install cmake)")
        ninja = _tool("ninja")
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        # A cache from an earlier build can point into a deleted pip build environment (its
        # pybind11, its Python). Configuration is cheap: always start from a fresh cache and let
        # Ninja reuse object files whose commands did not change.
        cache = build_dir / "CMakeCache.txt"
        if cache.exists():
            cache.unlink()
        shutil.rmtree(build_dir / "CMakeFiles", ignore_errors=True)
        # A module from an earlier build must not survive into this one (TASKGEOM_CUDA=0 after a CUDA
        # build would otherwise still ship the old taskgeom._cuda); Ninja relinks what CMake builds.
        for stale in out_dir.glob("_cuda*.so"):
            stale.unlink()

        cuda = os.environ.get("TASKGEOM_CUDA", "auto").lower()
        cuda = {"1": "ON", "on": "ON", "true": "ON", "0": "OFF", "off": "OFF", "false": "OFF"}.get(cuda, "AUTO")
        args = [
            f"-DCMAKE_BUILD_TYPE={os.environ.get('TASKGEOM_BUILD_TYPE', 'Release')}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DTASKGEOM_CUDA={cuda}",
            f"-DTASKGEOM_CUDA_ARCHS={os.environ.get('TASKGEOM_CUDA_ARCHS', '80;90')}",
            f"-DTASKGEOM_NATIVE={'OFF' if os.environ.get('TASKGEOM_NATIVE', '1') in ('0', 'off', 'OFF') else 'ON'}",
            f"-DTASKGEOM_FP64TC_ALL={'ON' if os.environ.get('TASKGEOM_FP64TC_ALL', '0') in ('1', 'on', 'ON') else 'OFF'}",
        ]
        if ninja:
            args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        args += [a for a in os.environ.get("CMAKE_ARGS", "").split() if a]
        subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        jobs = str(max(1, os.cpu_count() or 1))
        subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs], check=True)
        _record_commit(out_dir / "_commit.json")


def _record_commit(path):
    """The source's git commit (and whether it had local changes), recorded at build time, so that an
    installed taskgeom still knows which code it runs (git is not reachable from site-packages). Uses
    taskgeom/_provenance.py's own reader, loaded by path (the package itself is not importable yet)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("_taskgeom_provenance", ROOT / "taskgeom" / "_provenance.py")
    provenance = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provenance)
    info = {k: v for k, v in provenance._git(ROOT).items() if k != "source"}
    path.write_text(json.dumps(info))


setup(ext_modules=[CMakeExtension("taskgeom._C"), CMakeExtension("taskgeom._cuda")], cmdclass={"build_ext": CMakeBuild})

"""Builds the `mooncake` package with CMake for pip: libte.so, its plugins and
the mooncake.engine extension are installed inside the package (the extension
finds libte.so through RPATH $ORIGIN, libte.so its plugins in te-plugins/).
Environment: TE_CMAKE_ARGS (extra cmake arguments), TE_BUILD_JOBS (default 2)."""
import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(ROOT, "build-pip")  # ignored by git (/build*/)


def copy_tree_deref(src, dst):
    """Copies src into dst; a symlink becomes a copy of its target under the
    link's name and a file only reached through links is not copied twice."""
    os.makedirs(dst, exist_ok=True)
    names = os.listdir(src)
    link_targets = {os.path.basename(os.path.realpath(os.path.join(src, n)))
                    for n in names if os.path.islink(os.path.join(src, n))}
    for name in names:
        path = os.path.join(src, name)
        if os.path.isdir(path) and not os.path.islink(path):
            copy_tree_deref(path, os.path.join(dst, name))
        elif os.path.islink(path) or name not in link_targets:
            shutil.copyfile(path, os.path.join(dst, name))


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.path.join(WORK, "cmake")
        stage = os.path.join(WORK, "stage")
        site = os.path.join(stage, "site")
        configure = ["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                     "-DTE_BUILD_TESTS=OFF", "-DTE_WITH_PYTHON=ON", "-DTE_PYTHON_BUNDLE=ON",
                     f"-DPython3_EXECUTABLE={sys.executable}",
                     f"-DCMAKE_INSTALL_PREFIX={stage}", f"-DTE_PYTHON_INSTALL_DIR={site}"]
        configure += shlex.split(os.environ.get("TE_CMAKE_ARGS", ""))
        subprocess.check_call(configure)
        subprocess.check_call(["cmake", "--build", build_dir, "-j",
                               os.environ.get("TE_BUILD_JOBS", "2")])
        shutil.rmtree(stage, ignore_errors=True)
        subprocess.check_call(["cmake", "--install", build_dir])
        dest = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        copy_tree_deref(os.path.join(site, "mooncake"), dest)


os.makedirs(WORK, exist_ok=True)
setup(
    ext_modules=[Extension("mooncake.engine", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": os.path.join(WORK, "setuptools")},
             "egg_info": {"egg_base": WORK}},
)

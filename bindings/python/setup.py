"""Build braid._braid: SWIG wraps include/braid.h, the step driver is
compiled into the same module, and libbraid is found through pkg-config."""
import shlex
import subprocess

from setuptools import Extension, setup


def pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(["pkg-config", *args, "braid"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(
            "braid: pkg-config cannot find the braid C library; install it first "
            "(`make install` at the repository root) and put its lib/pkgconfig on PKG_CONFIG_PATH"
        ) from e
    return shlex.split(out)


cflags = pkg_config("--cflags")
include_dirs = [f[2:] for f in cflags if f.startswith("-I")]
libs = pkg_config("--libs")
libdir = pkg_config("--variable=libdir")[0]

setup(
    ext_modules=[
        Extension(
            "braid._braid",
            sources=["src/braid.i"],
            swig_opts=["-python", "-noproxy", "-threads", "-Isrc"] + [f"-I{d}" for d in include_dirs],
            include_dirs=["src"] + include_dirs,
            library_dirs=[f[2:] for f in libs if f.startswith("-L")],
            libraries=[f[2:] for f in libs if f.startswith("-l")],
            runtime_library_dirs=[libdir],
            extra_compile_args=["-std=gnu11", "-Wno-unused-function", "-Wno-missing-field-initializers"],
            depends=["src/driver.c", "src/driver.h"],
        )
    ],
)

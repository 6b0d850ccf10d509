from setuptools import setup

setup(cffi_modules=["uring_shim/_build.py:ffibuilder", "compat/_build.py:ffibuilder"])

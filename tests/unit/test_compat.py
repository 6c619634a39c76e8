"""oxsd.compat: the runtime differences (CPython >= 3.9, PyPy 3.9)."""
from __future__ import annotations

import mmap
import struct
import subprocess
import sys

import pytest

from oxsd.compat import PYPY, slotted_dataclass, uint32_words


def test_uint32_words_reads_and_writes_native_words_of_an_mmap():
    with mmap.mmap(-1, 4096) as mm:
        page = memoryview(mm)
        words = uint32_words(page)
        assert len(words) == 1024
        words[515] = 0x01020304
        assert mm[2060:2064] == struct.pack("=I", 0x01020304)
        mm[2048:2052] = struct.pack("=I", 0xFFFFFFFE)
        assert words[512] == 0xFFFFFFFE
        words.release()
        page.release()
        # nothing of the views is left: the mapping can be closed


def test_uint32_words_is_a_context_manager_over_a_bytearray():
    buf = bytearray(16)
    with memoryview(buf) as page, uint32_words(page) as words:
        words[3] = 7
    assert buf[12:16] == struct.pack("=I", 7)


def test_uint32_words_on_pypy_is_not_the_bytewise_memoryview():
    # PyPy 7.3's memoryview.cast('I') stores an item byte by byte (see compat's docstring)
    with memoryview(bytearray(8)) as page:
        words = uint32_words(page)
        assert isinstance(words, memoryview) is not PYPY
        words.release()


def test_slotted_dataclass_is_a_dataclass_with_equality():
    @slotted_dataclass
    class P:
        a: int
        b: str = "x"

    assert P(1) == P(1, "x") != P(2)
    with pytest.raises(TypeError):
        P()  # a required field


@pytest.mark.skipif(not PYPY, reason="the cffi view is PyPy's")
def test_uint32_words_on_pypy_does_not_load_cffis_c_parser():
    # cffi.FFI().from_buffer("uint32_t[]", ...) builds pycparser's parser on its
    # first call: tens of ms and MiB in the middle of the first ring's set-up
    code = ("import sys\n"
            "from oxsd.compat import uint32_words\n"
            "with memoryview(bytearray(8)) as page, uint32_words(page) as w:\n"
            "    w[1] = 5\n"
            "print(sorted(m for m in sys.modules if m.startswith(('pycparser', 'cffi'))))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"

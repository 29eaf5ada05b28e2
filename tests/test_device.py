"""Device choice and the CPU allocator tuning done by the `cdt` entry point."""

import ctypes.util
import subprocess
import sys

import pytest

from cdt.device import tune_cpu_allocator

GLIBC = sys.platform.startswith("linux") and ctypes.util.find_library("c") is not None


@pytest.mark.parametrize("name, value", [("CDT_MALLOC", "default"), ("MALLOC_MMAP_THRESHOLD_", "131072"),
                                         ("MALLOC_TRIM_THRESHOLD_", "131072"), ("LD_PRELOAD", "libjemalloc.so.2")])
def test_a_users_own_allocator_choice_is_left_alone(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert tune_cpu_allocator() is False


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_tuning_applies_on_linux_with_glibc(monkeypatch):
    for name in ("CDT_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    assert tune_cpu_allocator() is True


@pytest.mark.slow  # two fresh interpreters: run by .ci/run after the fast suite
def test_importing_cdt_does_not_tune_only_the_entry_point_does():
    """A library user's process keeps its allocator: only `cdt` / `python -m cdt` calls the tuning."""
    code = ("import sys, unittest.mock as m, cdt.device as d\n"
            "calls = []\n"
            "with m.patch.object(d, 'tune_cpu_allocator', side_effect=lambda: calls.append(1)):\n"
            "    import cdt.cli, cdt.sampling, cdt.train, cdt.calibrate, cdt.explore\n"
            "    print('after imports', len(calls))\n"
            "    sys.argv = ['cdt', '--help']\n"
            "    try:\n"
            "        cdt.cli.main()\n"
            "    except SystemExit:\n"
            "        pass\n"
            "    print('after main', len(calls))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "after imports 0" in proc.stdout and "after main 1" in proc.stdout

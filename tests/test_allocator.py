"""engine/allocator.py: freed tensor memory stays in the process (no page faults every step)."""

import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys
import torch
from cnnlab.engine.allocator import keep_freed_memory
said = keep_freed_memory() if sys.argv[1] == "tune" else "untouched"
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
before = rss()
t = torch.ones(6 * 1024 * 1024)  # 24 MB, freed at once
after_alloc = rss()
del t
print(json.dumps({"said": said, "kept": rss() - before, "grown": after_alloc - before}))
"""

glibc_linux = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                 reason="glibc's malloc only")


def probe(mode: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout)


@glibc_linux
def test_freed_tensor_memory_stays_in_the_process_once_tuned():
    default = probe("default")
    tuned = probe("tune")
    assert default["grown"] > 20e6 and tuned["grown"] > 20e6
    assert default["kept"] < 4e6, "glibc's default hands a freed 24 MB block back"
    assert tuned["said"] == "glibc, freed memory kept"
    assert tuned["kept"] > 20e6, "the block is kept for the next step"


@glibc_linux
@pytest.mark.parametrize("env, reason", [({"CNNLAB_MALLOC": "default"}, "CNNLAB_MALLOC=default"),
                                         ({"MALLOC_TRIM_THRESHOLD_": "1000000"}, "MALLOC_* set by the user")])
def test_the_users_own_setting_wins(env, reason):
    tuned = probe("tune", **env)
    assert tuned["said"] == f"left as is ({reason})"
    assert tuned["kept"] < 4e6

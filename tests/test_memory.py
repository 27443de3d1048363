"""The command line keeps freed memory for reuse (imgrestore.memory)."""

import os
import subprocess
import sys

import pytest

# one forward pass of a small network on a 384x384 input (its widest map,
# 96 channels, is 54 MiB): page faults of the second pass
PROBE = r"""
import resource, sys
import torch
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    from imgrestore.memory import keep_freed_memory
    print("kept", keep_freed_memory())
net = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.Conv2d(48, 96, 1), torch.nn.Conv2d(96, 48, 1),
                          torch.nn.Conv2d(48, 48, 3, padding=1, groups=48), torch.nn.Conv2d(48, 3, 3, padding=1)).eval()
x = torch.rand(1, 3, 384, 384)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():
        net(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()  # the first pass always faults its pages in
print("faults", min(faults() for _ in range(3)))
"""

linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                                 reason="glibc's malloc only")


def _probe(mode: str, **env) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**clean, **env}).stdout.split("\n")
    kept = next((line.split()[1] for line in out if line.startswith("kept")), "-")
    faults = int(next(line.split()[1] for line in out if line.startswith("faults")))
    return kept, faults


@linux_glibc
def test_freed_feature_maps_are_reused_without_page_faults():
    # glibc's defaults unmap a freed block over 32 MiB and fault every page of
    # it in again the next time (the kernel zeroes each one); kept, it comes back mapped
    _, default = _probe("default")
    kept, faults = _probe("keep")
    assert kept == "True"
    assert default > 10000
    assert faults < 1000


@linux_glibc
def test_the_users_malloc_settings_win():
    kept, faults = _probe("keep", MALLOC_TOP_PAD_="131072")
    assert kept == "False" and faults > 10000


def test_the_cli_keeps_freed_memory():
    import inspect

    from imgrestore import cli

    assert "keep_freed_memory()" in inspect.getsource(cli.main)

"""A container's CPU quota (cgroup v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us) caps the
thread counts both backends choose, as the affinity mask does.

A fake /sys/fs/cgroup tree (loky, which counts the CPUs, reads fixed paths: they are redirected
into a temporary folder) and a fake 8-CPU machine make these tests independent of the machine's
own cores and cgroups. Where the machine allows it (root, a cgroup hierarchy with the cpu
controller, `unshare`), a real cgroup with a 1-CPU quota checks the same in a child process
that sees it as a container does: as the root of its own cgroup namespace.
"""

import builtins
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import loky.backend.context as loky_context
import pytest

from fastmlp.backends.numba import backend as numba_backend
from fastmlp.backends.numba.threads import training_threads
from fastmlp.runtime import blas_threads, thread_policy
from fastmlp.runtime.thread_policy import BlasThreadPolicy, CpuLoad

CGROUP = "/sys/fs/cgroup"
MACHINE_CPUS = 8  # the fake machine's: more than any quota below, whatever this machine has


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """An 8-CPU machine whose /sys/fs/cgroup is tmp_path/cgroup (empty: no quota); returns that folder."""
    root = tmp_path / "cgroup"
    root.mkdir()

    def redirect(path):
        path = os.fspath(path)
        return str(root) + path[len(CGROUP):] if path.startswith(CGROUP + "/") else path

    real_exists, real_open = os.path.exists, builtins.open
    monkeypatch.setattr(os.path, "exists", lambda path: real_exists(redirect(path)))
    monkeypatch.setattr(loky_context, "open", lambda path, *a, **k: real_open(redirect(path), *a, **k), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: MACHINE_CPUS)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(MACHINE_CPUS)), raising=False)
    monkeypatch.delenv("LOKY_MAX_CPU_COUNT", raising=False)
    # The BLAS thread count is the other ceiling of both backends: as many as the machine's CPUs.
    monkeypatch.setattr(thread_policy, "blas_thread_count", lambda: MACHINE_CPUS)
    monkeypatch.setattr("fastmlp.backends.numba.threads.blas_thread_count", lambda: MACHINE_CPUS)
    return root


def cgroup_v2(root, cpu_max):
    (root / "cpu.max").write_text(cpu_max + "\n")


def cgroup_v1(root, quota, period=100000):
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")


def chosen_threads():
    """usable CPUs, numba's default workers and its free cores beside no other work, numpy's BLAS count,
    CpuLoad's cores."""
    policy = BlasThreadPolicy()
    policy.start()
    backend = numba_backend.Backend()
    return blas_threads.usable_cpus(), training_threads(), backend._free_threads(), policy.decide(), CpuLoad().cpus


@pytest.fixture(autouse=True)
def nobody_else_running(monkeypatch):
    monkeypatch.setattr(numba_backend, "others_running", lambda: 0)


@pytest.mark.parametrize("cpu_max, expected", [("100000 100000", 1), ("300000 100000", 3), ("150000 100000", 2),
                                               ("50000 100000", 1), ("max 100000", MACHINE_CPUS)])
def test_cgroup_v2_cpu_max_caps_both_backends(machine, cpu_max, expected):
    cgroup_v2(machine, cpu_max)
    assert chosen_threads() == (expected,) * 5


@pytest.mark.parametrize("quota, period, expected", [(100000, 100000, 1), (200000, 100000, 2), (250000, 100000, 3),
                                                     (-1, 100000, MACHINE_CPUS)])
def test_cgroup_v1_cfs_quota_caps_both_backends(machine, quota, period, expected):
    cgroup_v1(machine, quota, period)
    assert chosen_threads() == (expected,) * 5


def test_no_cgroup_leaves_the_affinity_mask(machine, monkeypatch):
    assert chosen_threads() == (MACHINE_CPUS,) * 5
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert blas_threads.usable_cpus() == 3 and len(blas_threads.usable_cpu_ids()) == 3
    cgroup_v2(machine, "200000 100000")
    assert blas_threads.usable_cpus() == 2


def test_a_fixed_thread_count_is_not_capped_by_the_quota(machine):
    cgroup_v2(machine, "100000 100000")
    assert BlasThreadPolicy(threads=4).decide() == 4
    assert numba_backend.Backend(threads=4).threads == 4


# --- a real cgroup -------------------------------------------------------------------------------

CHILD = """
import json, os
from fastmlp.runtime.blas_threads import usable_cpus
from fastmlp.runtime.thread_policy import BlasThreadPolicy
from fastmlp.backends.numba.threads import training_threads
policy = BlasThreadPolicy()
policy.start()
print(json.dumps({"usable": usable_cpus(), "numba": training_threads(), "numpy": policy.decide(),
                  "cgroup": open("/proc/self/cgroup").read()}))
"""


def _real_cgroup_missing():
    """Why a real cgroup cannot be made here, or None: (version, folder of the cpu controller)."""
    if sys.platform != "linux":
        return "not Linux: no cgroups"
    if os.geteuid() != 0:
        return "not root: cannot create a cgroup"
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux) to give the child its own cgroup namespace"
    return None


def _cpu_hierarchy():
    """("v1", /sys/fs/cgroup/cpu) or ("v2", /sys/fs/cgroup) where the cpu controller is mounted, else None."""
    v1 = Path(CGROUP, "cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        return "v1", v1
    controllers = Path(CGROUP, "cgroup.controllers")
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return "v2", Path(CGROUP)
    return None


def test_a_real_one_cpu_cgroup_quota_caps_both_backends(tmp_path):
    missing = _real_cgroup_missing()
    hierarchy = _cpu_hierarchy()
    if missing is None and hierarchy is None:
        missing = f"no cgroup hierarchy with the cpu controller under {CGROUP}"
    if missing:
        pytest.skip(missing)
    version, parent = hierarchy
    child = parent / f"fastmlp-test-{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
        if version == "v1":
            (child / "cpu.cfs_period_us").write_text("100000")
            (child / "cpu.cfs_quota_us").write_text("100000")
            remount = f"umount {parent} && mount -t cgroup -o cpu cgroup {parent}"
        else:
            (parent / "cgroup.subtree_control").write_text("+cpu")
            (child / "cpu.max").write_text("100000 100000")
            remount = f"umount {parent} && mount -t cgroup2 cgroup2 {parent}"
    except OSError as exc:
        if child.exists():
            child.rmdir()  # a cgroup folder goes with rmdir, its files with it
        pytest.skip(f"cannot set a CPU quota in a new cgroup under {parent}: {exc}")
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    env.pop("LOKY_MAX_CPU_COUNT", None)
    env.pop("OPENBLAS_NUM_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    # The child joins the cgroup, then (as in a container) gets its own cgroup and mount namespaces
    # with the hierarchy mounted again: there its cgroup is the root, and the quota is at the path loky reads.
    (tmp_path / "child.py").write_text(CHILD)
    script = (f'echo $$ > {child}/cgroup.procs && exec unshare --cgroup --mount sh -c '
              f'"{remount} && exec {sys.executable} {tmp_path / "child.py"}"')
    try:
        result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=600)
    finally:
        child.rmdir()
    if result.returncode != 0 and ("unshare" in result.stderr or "mount" in result.stderr):
        pytest.skip(f"cannot give a child process its own cgroup namespace here: {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["usable"] == seen["numba"] == seen["numpy"] == 1, seen

"""Helpers shared by the benchmark programs (bench/*.py, examples/house-prices/bench.py)."""

import datetime as _dt
import os
import platform
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
HUGE_PAGE = 2 * 1024 * 1024


def meminfo_kib(key):
    """A /proc/meminfo value (kB, or a count for HugePages_*); 0 when absent."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class HugePageError(RuntimeError):
    pass


class HugePagePool:
    """Makes sure `pages` free 2 MiB huge pages exist (growing the pool needs root) and
    restores the pool size afterwards."""

    def __init__(self):
        self.saved = None

    def ensure(self, pages):
        free = meminfo_kib("HugePages_Free")
        if free >= pages:
            return
        with open(NR_HUGEPAGES) as f:
            total = int(f.read())
        try:
            with open(NR_HUGEPAGES, "w") as f:
                f.write(str(total + pages - free))
        except OSError as e:
            raise HugePageError(f"{pages} free huge pages needed, {free} free, and {NR_HUGEPAGES} is not "
                                f"writable ({e}); run as root or reserve them first")
        if self.saved is None:
            self.saved = total
        got = meminfo_kib("HugePages_Free")
        if got < pages:
            raise HugePageError(f"the kernel gave {got} of {pages} huge pages (memory fragmented?)")

    def restore(self):
        """Puts the pool back to its size before `ensure`; returns an error text or None."""
        if self.saved is None:
            return None
        try:
            with open(NR_HUGEPAGES, "w") as f:
                f.write(str(self.saved))
        except OSError as e:
            return f"could not restore {NR_HUGEPAGES} to {self.saved}: {e}"
        finally:
            self.saved = None
        return None


def machine_info() -> dict:
    """CPU, cores, memory, kernel, Python, packages, date and commit, for the tables' footers."""
    info = {"cpu": "unknown", "memory": "unknown"}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["memory"] = f"{meminfo_kib('MemTotal') / (1 << 20):.1f} GiB"
    except OSError:
        pass
    info["cores"] = os.cpu_count()
    info["cores_usable"] = len(os.sched_getaffinity(0))
    info["kernel"] = platform.release()
    info["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["python"] = platform.python_version()
    try:
        import numpy
        import pandas
        import vineyard

        info["packages"] = f"vineyard {vineyard.__version__}, numpy {numpy.__version__}, pandas {pandas.__version__}"
    except ImportError:
        pass
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    return info

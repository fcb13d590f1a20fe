"""Shared pieces of the benchmark programs (bench/*.py) and the Python test harnesses.

- ``benchkit.daemons``: finding ``trellis`` and ``vineyardd``, and running them (``Process``,
  ``Daemon``): started in their own session with output in a log file, ready once their
  socket accepts, stopped by PID. tests/integration/harness.py, tests/cluster/cluster_lib.py
  and every benchmark start their daemons through it.
- ``benchkit.workers``: the worker protocol: a benchmark runs its measurements in child
  processes of its own script (``--_worker KIND ARGS``) that print ``READY``, wait for
  ``GO`` (so interpreter start-up is never timed and several start at the same instant),
  and print ``RESULT <json>``; ``GO`` may carry a payload, and a worker may run under
  another interpreter (another venv, a namespace).
- ``benchkit.raynode``: a Ray head node for the benchmarks' Ray anchors (``.venv-ray``, made
  by ``bench/setup_ray.sh``), in a private network namespace with only loopback, stopped
  by PID.
- ``benchkit.procstats``: /proc readings (CPU time, faults, RSS), a meter of the CPU other
  processes used meanwhile, pinning, sizes and percentiles.
- ``benchkit.report``: the machine a run came from and the generated sections of
  docs/BENCHMARKS.md.
- ``benchkit.machine``: hugetlb pool handling and the machine description.

Import it with ``bench/`` on ``sys.path``.
"""

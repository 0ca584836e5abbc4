"""One abi3 wheel or one wheel per Python version: the hot operations of both builds, side by side.

`make bench` builds the core twice in release mode (per-version, as `make build-release`
installs it, and with the stable ABI, `--features abi3`) and lays each out as a `metrics`
package under `target/bench-abi/<variant>/`. This script runs the hot operations of
`bench/core.py` in a fresh interpreter per variant, alternating the variants round by round so
machine noise hits both alike, and prints ns/op (median of rounds) and the ratio abi3 /
per-version (above 1: abi3 is slower).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / "target" / "bench-abi"
VARIANTS = ("per-version", "abi3")
ROUNDS = 7
N = 200_000

CHILD = """
import json, sys
sys.path.insert(0, {bench!r})
import metrics, metrics._core
from core import hot_ops, per_op
ops = hot_ops(metrics, metrics.CollectorRegistry())
for fn in ops.values():
    fn(1000)  # warm up
print(json.dumps({{"file": metrics._core.__file__, **{{name: per_op(fn, {n}) for name, fn in ops.items()}}}}))
"""


def run_round(variant: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(LAYOUT / variant)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(bench=str(ROOT / "bench"), n=N)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    where = result.pop("file")
    if not where.startswith(str(LAYOUT / variant)):
        raise SystemExit(f"{variant}: imported {where}, not the build under {LAYOUT / variant}")
    return result


def main() -> None:
    missing = [v for v in VARIANTS if not (LAYOUT / v / "metrics").is_dir()]
    if missing:
        raise SystemExit(f"missing builds {missing} under {LAYOUT}: run `make bench`")
    rounds: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(ROUNDS):
        for variant in VARIANTS:
            rounds[variant].append(run_round(variant))
    ops = list(rounds[VARIANTS[0]][0])
    print(f"\n== abi3 wheel vs per-version wheel (release builds, {ROUNDS} alternating rounds) ==")
    print(f"{'operation':<24}{'per-version ns':>16}{'abi3 ns':>10}{'abi3 / per-version':>20}")
    for op in ops:
        per_version = statistics.median(r[op] for r in rounds["per-version"])
        abi3 = statistics.median(r[op] for r in rounds["abi3"])
        print(f"{op:<24}{per_version:>16.1f}{abi3:>10.1f}{abi3 / per_version:>20.2f}")


if __name__ == "__main__":
    main()

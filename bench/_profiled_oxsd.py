"""oxsd's main with a cProfile window that SIGUSR2 opens and closes (for profile_request_path.py).

    python3 bench/_profiled_oxsd.py STEM -- <oxsd arguments>

The first SIGUSR2 resets and enables a profiler and creates STEM.on; the
next disables it, writes its stats to STEM.prof and creates STEM.off; and
so on.  The handler runs in the main thread between two bytecodes, so the
window starts and ends inside the loop iteration the signal woke (a
constant the driver measures with an empty window and subtracts).
"""
from __future__ import annotations

import cProfile
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    stem = sys.argv[1]
    assert sys.argv[2] == "--"
    argv = [sys.argv[0]] + sys.argv[3:]
    state = {"prof": None}

    def toggle(_signum, _frame) -> None:
        prof = state["prof"]
        if prof is None:
            prof = state["prof"] = cProfile.Profile()
            Path(stem + ".on").touch()
            prof.enable()
        else:
            prof.disable()
            state["prof"] = None
            prof.dump_stats(stem + ".prof")
            Path(stem + ".off").touch()

    signal.signal(signal.SIGUSR2, toggle)
    from oxsd.xenstored import main as oxsd_main
    return oxsd_main(argv)


if __name__ == "__main__":
    sys.exit(main())

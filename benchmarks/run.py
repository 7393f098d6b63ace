"""Run the benchmark suite of parallelize (see benchmarks/README.md).

python benchmarks/run.py [--quick] [--only W1,W3] [--impl parallelize,pool_map]
"""

import sys
from pathlib import Path

# Run as a script: import this checkout's `benchmarks` and `parallelize` packages,
# not the modules of this folder one by one.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

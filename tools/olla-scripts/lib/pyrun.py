#!/usr/bin/env python3
"""Runs one of Olla's Python test scripts, unchanged, as `python SCRIPT ARGS...` would,
and records the checks it made.

    pyrun.py CHECKS.json SCRIPT [ARGS...]

The script is executed from its own file (runpy, as `__main__`, its directory first on
sys.path), so it behaves exactly as when started directly. Two things are added around it:

- `random` is seeded (OLLA_RANDOM_SEED, default 1): test-integration.py picks its model
  and backends with random.choice, and a rerun should test the same ones;
- every `TestResult(name, passed, detail)` the script creates (sticky, integration and
  passthrough keep their verdicts in such objects) is collected, in order, through a
  profile hook, and written to CHECKS.json as [{"name", "passed", "detail"}] when the
  script ends, whatever way it ends. Scripts without that class leave an empty list and
  are judged from their output by parse.py.

The exit status is the script's.
"""

import json
import os
import random
import runpy
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: pyrun.py CHECKS.json SCRIPT [ARGS...]")
    out_path, script = sys.argv[1], os.path.abspath(sys.argv[2])
    random.seed(int(os.environ.get("OLLA_RANDOM_SEED", "1")))
    results = []

    def profile(frame, event, _arg):
        if event == "return" and frame.f_code.co_name == "__init__" \
                and frame.f_code.co_filename == script:
            obj = frame.f_locals.get("self")
            if type(obj).__name__ == "TestResult":
                results.append(obj)

    def dump():
        checks = [{"name": str(getattr(r, "name", "?")),
                   "passed": bool(getattr(r, "passed", False)),
                   "detail": str(getattr(r, "detail", "") or "")} for r in results]
        with open(out_path, "w", encoding="utf-8") as f:
            json.dump(checks, f, indent=1)

    sys.argv = [script] + sys.argv[3:]
    sys.path[0] = os.path.dirname(script)
    code = 0
    sys.setprofile(profile)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        sys.setprofile(None)
        dump()
    sys.exit(code)


if __name__ == "__main__":
    main()

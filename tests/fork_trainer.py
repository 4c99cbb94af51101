"""A zygote for the kill tests (tests/test_faults_training.py): imports the command line and the training stack
once, then forks one fresh process per request that runs the train command (``python -m experiments.run train
ARGS``, with every compiled program kept in the persistent compilation cache). Each of the many
runs that the test kills with SIGKILL then starts in a fraction of a second instead of re-importing JAX; the
JAX backend is never initialised here, only in the forked children, so every child is a clean JAX process.

Protocol, one JSON object per line: stdin ``{"argv": [...], "log": PATH}`` -> stdout ``{"pid": PID}`` (the
child's stdout and stderr go to PATH); stdin ``{"wait": PID}`` -> stdout ``{"pid": PID, "exitcode": N, "cpu_s": S}``
(exitcode negative: killed by that signal; cpu_s: the child's user + system CPU seconds). End of stdin ends the
zygote.
"""

import json
import os
import sys
import traceback


def _child(argv, log_path):
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdin.close()
    code = 1
    try:
        import argparse

        import jax

        from experiments import train
        from experiments.config import enable_compilation_cache

        parser = argparse.ArgumentParser()
        train.add_arguments(parser)
        args = parser.parse_args(argv)
        enable_compilation_cache()  # as `python -m experiments.run train`, and every program is stored:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # a restart compiles nothing
        code = train.main(args) or 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child reports any failure through its exit code and log
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # no atexit handlers inherited from the zygote


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401

    import experiments.train  # noqa: F401
    import qallegro.models  # noqa: F401
    import qallegro.train.run  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "wait" in request:
            pid, status, usage = os.wait4(int(request["wait"]), 0)
            print(json.dumps({"pid": pid, "exitcode": os.waitstatus_to_exitcode(status),
                              "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            _child(request["argv"], request["log"])
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    main()

"""Start a command as its own session, detached from the caller, and print `<pid> <create_time>`.

Run as `python -m backends.detach <cwd> <log_file> <nice> -- argv...`. The double fork reparents the agent
to init, so it survives the worker that started it and never lingers as that worker's zombie.
"""

from __future__ import annotations

import os
import sys

import psutil


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        print("usage: python -m backends.detach <cwd> <log_file> <nice> -- argv...", file=sys.stderr)
        return 2
    cwd, log_file, nice, command = argv[0], argv[1], int(argv[2]), argv[4:]
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if nice:
                os.nice(nice)
                # With autogroup scheduling each session is its own group and a task's nice only
                # counts inside it: lower the new session's group too (Linux; best effort).
                try:
                    with open("/proc/self/autogroup", "w") as group:
                        group.write(str(nice))
                except OSError:
                    pass
            os.chdir(cwd)
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"cannot start {command[0]}: {exc}\n".encode())
        finally:
            os._exit(127)
    # The child is ours until we exit, so its /proc entry (and start time) is still readable.
    create_time = psutil.Process(pid).create_time()
    print(f"{pid} {create_time:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

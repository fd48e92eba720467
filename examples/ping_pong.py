"""corral's main job for now: start processes with every start method and talk to them.

For each start method (fork, spawn, forkserver) this starts worker processes
that each receive numbers over a Pipe, square them and send them back, checks
every answer, and prints the wall time and round trips per second.

Run: python examples/ping_pong.py [--workers N] [--messages M]
"""

from __future__ import annotations

import argparse
import time

import corral


def square_server(conn: corral.connection.Connection) -> None:
    """Answer every number with its square until None arrives."""
    while (value := conn.recv()) is not None:
        conn.send(value * value)
    conn.close()


def run(method: str, workers: int, messages: int) -> None:
    ctx = corral.get_context(method)
    started = time.perf_counter()
    pipes, procs = [], []
    for _ in range(workers):
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=square_server, args=(child_end,))
        proc.start()
        child_end.close()
        pipes.append(parent_end)
        procs.append(proc)
    startup = time.perf_counter() - started
    t0 = time.perf_counter()
    for i in range(messages):
        for conn in pipes:
            conn.send(i)
        for conn in pipes:
            answer = conn.recv()
            if answer != i * i:
                raise SystemExit(f"{method}: wrong answer {answer} for {i}")
    elapsed = time.perf_counter() - t0
    for conn in pipes:
        conn.send(None)
    for proc in procs:
        proc.join(timeout=30)
        if proc.exitcode != 0:
            raise SystemExit(f"{method}: worker {proc.pid} exited with {proc.exitcode}")
    rate = messages * workers / elapsed
    print(
        f"{method:>10}: {workers} workers started in {startup * 1000:7.1f} ms, "
        f"{messages * workers} round trips at {rate:,.0f}/s, all answers correct"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=corral.cpu_count())
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    for method in corral.get_all_start_methods():
        run(method, args.workers, args.messages)


if __name__ == "__main__":
    main()

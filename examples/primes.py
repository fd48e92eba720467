"""Example task for ``corral map``: factorize integers (CPU-bound, one per line).

    corral map examples.primes:factorize examples/numbers.jsonl

An input that is not a positive integer fails with an error record, and the
exit status says so; every other line still gets its answer.
"""


def factorize(n: int) -> list[int]:
    """The prime factors of ``n`` in ascending order.

    Raises:
        ValueError: ``n`` is not an integer >= 2.
    """
    if not isinstance(n, int) or n < 2:
        msg = f"expected an integer >= 2, got {n!r}"
        raise ValueError(msg)
    factors = []
    d = 2
    while d * d <= n:
        while n % d == 0:
            factors.append(d)
            n //= d
        d += 1
    if n > 1:
        factors.append(n)
    return factors

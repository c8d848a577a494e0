# Stub for convkern/_threads.py.
# tests/test_config.py checks that these signatures match the implementation.

MAX_THREADS: int

def set_num_threads(n: int | None) -> None: ...
def get_num_threads() -> int: ...

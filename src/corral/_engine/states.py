"""The engine's states and the kinds of file descriptor it waits on."""

# Engine states.
RUNNING = "running"
CLOSING = "closing"  # finish the queued work, then stop the workers
STOPPING = "stopping"  # stop the workers now
STOPPED = "stopped"

# What a selector key stands for (key.data[0]).
_WAKE = 0  # the wake-up pipe
_CHANNEL = 1  # a worker's channel
_DEATH = 2  # a worker's death fd

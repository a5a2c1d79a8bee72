"""A resumed handler that writes each number it gets to a file, for the fault test that also
restarts Redis (which would take a list kept in Redis with it)."""

import os

from eventbus import Channel, Context, on

steady = Channel("steady", history=100_000)


@on(steady, name="steady", resume=True)
def record(number: int, ctx: Context) -> None:  # a plain def: eventbus runs it in a thread
    with open(os.environ["STEADY_RECORD"], "a") as record_file:
        record_file.write(f"{number}\n")

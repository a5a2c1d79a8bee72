"""The olympics tutorial's five listeners, thread per listener, ported to Python 3.

This is the design eventbus replaces, kept faithful to the tutorial (``seeds/olympics-tutorial.txt``):
a shared client, one blocking ``listen()`` loop and one pipeline per listener, each in its own
thread. Only its bugs are fixed:
- Python 3: ``print()``, ``int`` for ``long``, ``decode_responses=True`` so ids concatenate as str;
- the hour of a sale is taken in UTC from the order's ``ts`` (the tutorial mixed local time and UTC);
- the histogram counters are ``BITFIELD ... INCRBY u32 #<hour> qty``: the tutorial's ``u8`` at
  ``(hour+1)*8`` wraps at 255 tickets per hour; ``#<hour>`` addresses the hour-th u32 slot
  (bit offset 32*hour), one counter per UTC hour that cannot wrap in any realistic day;
- the alerters' lines go to /dev/null in the benchmark (formatted, not shown).

Run by the benchmark as ``python -m benchmarks.olympics.tutorial SPEC.json``; each listener counts
its finished messages so the run ends when the slowest listener has done all of its work.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import redis

from benchmarks.contenders.recorder import Body, load

Listener = Callable[[redis.Redis, str, Body], None]
OUT = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def listener_sales_analytics(r: redis.Redis, queue: str, done: Body) -> None:
    l = r.pubsub(ignore_subscribe_messages=True)  # noqa: E741 - the tutorial's name
    l.subscribe(queue)
    p = r.pipeline()
    for message in l.listen():
        order_id = message["data"]
        order = r.hgetall("purchase_order_details:" + order_id)
        hour_of_day = time.gmtime(int(order["ts"])).tm_hour
        vals = ["INCRBY", "u32", f"#{hour_of_day}", order["qty"]]
        p.execute_command("BITFIELD", "sales_histogram:time_of_day", *vals)
        p.execute_command("BITFIELD", "sales_histogram:time_of_day:" + order["event"], *vals)
        p.execute()
        done(b"")


def listener_events_analytics(r: redis.Redis, queue: str, done: Body) -> None:
    l = r.pubsub(ignore_subscribe_messages=True)  # noqa: E741
    l.subscribe(queue)
    p = r.pipeline()
    for message in l.listen():
        order_id = message["data"]
        order = r.hgetall("purchase_order_details:" + order_id)
        event_name = order["event"]
        p.sadd("sales:" + event_name, order_id)
        p.hincrbyfloat("sales_summary", event_name + ":total_sales", order["cost"])
        p.hincrby("sales_summary", event_name + ":total_tickets_sold", order["qty"])
        p.execute()
        done(b"")


def listener_customer_purchases(r: redis.Redis, queue: str, done: Body) -> None:
    l = r.pubsub(ignore_subscribe_messages=True)  # noqa: E741
    l.subscribe(queue)
    p = r.pipeline()
    for message in l.listen():
        order_id = message["data"]
        order = r.hgetall("purchase_order_details:" + order_id)
        p.sadd("invoices:" + order["who"], order_id)
        p.execute()
        done(b"")


def listener_opening_ceremony_alerter(r: redis.Redis, queue: str, done: Body) -> None:
    l = r.pubsub(ignore_subscribe_messages=True)  # noqa: E741
    l.subscribe(queue + ":Opening Ceremony")
    for message in l.listen():
        order_id = message["data"]
        order = r.hgetall("purchase_order_details:" + order_id)
        print("===> Purchase {}: #{} ${}".format(order["event"], order["qty"], order["cost"]), file=OUT)
        done(b"")


def listener_ceremony_alerter(r: redis.Redis, queue: str, done: Body) -> None:
    l = r.pubsub(ignore_subscribe_messages=True)  # noqa: E741
    l.psubscribe(queue + ":* Ceremony")
    for message in l.listen():
        order_id = message["data"]
        order = r.hgetall("purchase_order_details:" + order_id)
        print("Purchase {}: #{} ${}".format(order["event"], order["qty"], order["cost"]), file=OUT)
        done(b"")


LISTENERS: dict[str, Listener] = {
    "sales_analytics": listener_sales_analytics,
    "events_analytics": listener_events_analytics,
    "customer_purchases": listener_customer_purchases,
    "opening_ceremony_alerter": listener_opening_ceremony_alerter,
    "ceremony_alerter": listener_ceremony_alerter,
}


def main() -> None:
    spec, rec = load(sys.argv, "olympics_threads")
    r = redis.Redis.from_url(spec.url, decode_responses=True)
    for h in spec.handlers:
        t = threading.Thread(target=LISTENERS[h.name], args=(r, "purchase_orders", rec.body(h.name)), daemon=True)
        t.start()
    rec.done.wait()


if __name__ == "__main__":
    main()

"""apps.olympics_streams - the Olympics ticket sales on Redis Streams: durable and load-shared.

The pub/sub variant (:mod:`apps.olympics`) loses a purchase if a listener is down when it is
published, and each listener runs in exactly one process. Here:

* the producer appends each purchase (its full order) to the stream ``olympics:purchase_orders``
  and stores the order hash ``purchase_order_details:<id>``, both in one MULTI;
* each listener is a consumer group (:func:`eventbus.on_stream`), so a listener that was down
  catches up from where its group stopped, and several worker processes share each listener's
  work: ``python -m eventbus run apps.olympics_streams.listeners --workers 3``;
* a worker killed mid-purchase leaves its entries pending; another worker claims them after
  ``OLYMPICS_STREAMS_CLAIM_IDLE`` seconds (default 30). Delivery is at-least-once, so each
  analytics listener applies an order's increments exactly once, atomically: a Lua script sets
  the marker ``olympics:applied:<listener>:<order id>`` (SET NX, kept 7 days) and does the
  increments only if the marker was new. Set additions (``SADD``) are idempotent as they are.

    python -m eventbus run apps.olympics_streams.listeners --workers 3 --url URL
    python -m apps.olympics_streams produce 5000 --url URL      # seeded purchases
    python -m apps.olympics report --url URL                     # the same report as pub/sub

The keys written are the pub/sub variant's, so its report and tests read them unchanged. On a
Redis Cluster the scripts' keys would need one hash slot; this variant targets one server.
"""

from apps.olympics_streams.producer import PURCHASES_STREAM, post_purchase, produce

__all__ = ["PURCHASES_STREAM", "post_purchase", "produce"]

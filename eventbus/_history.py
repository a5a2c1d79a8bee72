"""A recoverable channel's history in Redis: the atomic publish and the reads that recover from it.

Per channel, keys that share a hash tag (so that on Redis Cluster they, and the sharded channel
itself, live in one slot):

- ``eventbus:history:{channel}``: a stream of the latest ``history`` payloads, each entry's id
  ``<epoch>-<offset>``, trimmed with ``MAXLEN ~ history``: at least ``history`` entries are kept
  (Redis trims whole nodes of up to 100 entries; exact trimming made a publish ~3x slower, see
  benchmarks/RESULTS.md);
- ``eventbus:history-top:{channel}``: the top offset as this node wrote it, sent to its AOF but
  never to replicas (the failover check below);
- ``eventbus:history-prev:{channel}``: after a failover, what the promoted replica had of the epoch
  it replaced, kept for the subscribers still positioned in it.

The stream numbers the messages itself: ``XADD <epoch>-*`` gives the next offset of the epoch the
publisher names, so a publish is the XADD, the check and the PUBLISH, one script and one round
trip, and no subscriber can see a message that is not in the history (the scheme of Centrifugo's
Redis broker). The published payload carries its offset and epoch in an envelope
(``\\x00EB<offset>:<epoch>:<payload>``) that eventbus subscribers strip before a handler sees it.

The epoch names one life of the history: when the keys are lost (a restart without persistence,
an idle channel's TTL) the next publish starts a new epoch at offset 1, and a subscriber that
sees another epoch knows its position means nothing there. An epoch is a number (the server's
clock in ms, times ten, plus one for an epoch begun by a failover, :func:`is_failover`), larger
than the one it replaces; a publisher keeps the epoch it last saw, and the stream refuses an
``XADD`` with an older one, which is how a publisher learns of a new epoch.

A failover promotes a replica whose copy may lack the newest entries (replication is
asynchronous): continuing its epoch would give new messages offsets that subscribers already
received, and they would skip them as repeats. So the script tells its own history from a
replica's copy: the top key is written with ``redis.set_repl(redis.REPL_AOF)``, kept by the master
(and its AOF and snapshots, so a restart with persistence keeps the epoch) but never sent to
replicas. Where it is not the offset before the new one, the node did not write the history's last
message: it starts a new epoch marked as a failover's, and subscribers report what the old one
may have lost (eventbus._recovery). So does a node without the history at all where a publisher
names the epoch it saw (a replica that had not yet received the channel's first messages, a
restart without persistence); a publisher does not name it past the channel's ttl since its own
last publish, when the history may have expired as it should. A replica that synced in full
after the channel's last publish holds the top key too: if its master then publishes only
messages that never reach it before dying, that failover is not told apart (docs/recovery.md,
"Failover on Redis Cluster").
"""

from __future__ import annotations

import asyncio
import time
from hashlib import sha1
from typing import Any, NamedTuple, Protocol

from redis.exceptions import NoScriptError, ResponseError

from eventbus._channels import Channel
from eventbus._names import decode_name, encode_name

ENVELOPE = b"\x00EB"
KEY_PREFIX = "eventbus:history:"
TOP_PREFIX = "eventbus:history-top:"
PREVIOUS_PREFIX = "eventbus:history-prev:"
POSITIONS_PREFIX = "eventbus:history-pos:"
# The last digit of an epoch begun by a promoted replica (see the module docstring).
FAILOVER = b"1"
NO_EPOCH = b"0"  # what a publisher names before it has seen the channel's epoch

# KEYS: the stream, the top key, the previous epoch's stream. ARGV: payload, history, the epoch the
# publisher last saw (NO_EPOCH: none, or not since the channel's ttl: the history may have expired
# as it should), ttl in ms (0: none), channel, command.
# Returns the receivers where the publisher's epoch was the history's; otherwise {receivers, epoch}
# with the epoch it has now, which the publisher keeps.
PUBLISH_SCRIPT = """
local epoch = ARGV[3]
local old = 0
local failover = 0
local appended
if epoch ~= '0' then
  local id = redis.pcall('xadd', KEYS[1], 'MAXLEN', '~', ARGV[2], epoch .. '-*', 'd', ARGV[1])
  if type(id) == 'string' then
    local offset = string.sub(id, #epoch + 2)
    local last
    if redis.set_repl then redis.set_repl(redis.REPL_AOF) end
    if ARGV[4] == '0' then
      last = redis.call('set', KEYS[2], offset, 'GET')
    else
      last = redis.call('set', KEYS[2], offset, 'PX', ARGV[4], 'GET')
      redis.call('pexpire', KEYS[1], ARGV[4])
    end
    if redis.set_repl then redis.set_repl(redis.REPL_ALL) end
    if tonumber(last) == tonumber(offset) - 1 then
      return redis.call(ARGV[6], ARGV[5], '\\0EB' .. offset .. ':' .. epoch .. ':' .. ARGV[1])
    end
    -- This node lacks what the publisher saw: the history's newest messages (a promoted replica's
    -- copy, which did not write them), or all of it (offset 0: the stream was missing, or of an
    -- older epoch than the publisher's). Subscribers must hear that something may be lost.
    old = tonumber(epoch)
    failover = 1
    appended = id
  elseif not string.find(tostring(id['err']), 'equal or smaller', 1, true) then
    return id
  else
    epoch = '0'
  end
end
if epoch == '0' then
  -- The publisher's epoch is unknown or older: continue the stream's own, if this node wrote it.
  local top = redis.call('xrevrange', KEYS[1], '+', '-', 'COUNT', 1)[1]
  if top then
    local current, offset = string.match(top[1], '^(%d+)-(%d+)$')
    local last = redis.call('get', KEYS[2])
    if current and last == offset then
      offset = string.format('%d', tonumber(offset) + 1)
      redis.call('xadd', KEYS[1], 'MAXLEN', '~', ARGV[2], current .. '-' .. offset, 'd', ARGV[1])
      if redis.set_repl then redis.set_repl(redis.REPL_AOF) end
      redis.call('set', KEYS[2], offset)
      if redis.set_repl then redis.set_repl(redis.REPL_ALL) end
      if ARGV[4] ~= '0' then
        redis.call('pexpire', KEYS[1], ARGV[4])
        redis.call('pexpire', KEYS[2], ARGV[4])
      end
      local receivers = redis.call(ARGV[6], ARGV[5], '\\0EB' .. offset .. ':' .. current .. ':' .. ARGV[1])
      return {receivers, current}
    end
    old = tonumber(current or '0') or 0
    failover = 1
  end
end
-- A new epoch, larger than the one it replaces, at offset 1.
local now = redis.call('time')
local number = (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) * 10 + failover
if number <= old then
  number = old - old % 10 + 10 + failover
end
epoch = string.format('%.0f', number)
if appended then
  redis.call('xdel', KEYS[1], appended)
end
if failover == 1 and redis.call('xlen', KEYS[1]) > 0 then
  -- What this node has of the old epoch stays readable (with its TTL) for subscribers positioned
  -- in it: they recover what it holds after their position, and report only the rest.
  redis.call('rename', KEYS[1], KEYS[3])
else
  redis.call('del', KEYS[1])
end
redis.call('xadd', KEYS[1], epoch .. '-1', 'd', ARGV[1])
if redis.set_repl then redis.set_repl(redis.REPL_AOF) end
redis.call('set', KEYS[2], '1')
if redis.set_repl then redis.set_repl(redis.REPL_ALL) end
if ARGV[4] ~= '0' then
  redis.call('pexpire', KEYS[1], ARGV[4])
  redis.call('pexpire', KEYS[2], ARGV[4])
end
local receivers = redis.call(ARGV[6], ARGV[5], '\\0EB1:' .. epoch .. ':' .. ARGV[1])
return {receivers, epoch}
"""

# KEYS: the stream, the previous epoch's stream. ARGV: the first offset wanted, how many at most (0:
# only the epoch and top), the epoch the reader is positioned in ('': none).
# Returns {epoch or '', top offset, first offset returned, superseded (1: the previous epoch's
# stream, which holds the wanted offset though a new epoch began), payload, payload, ...}: the
# entries of an epoch are consecutive offsets (every publish appends one; trimming removes the
# oldest), so one offset and the payloads say it all, and a page of 10,000 is parsed by hiredis alone.
READ_SCRIPT = """
local key = KEYS[1]
local top = redis.call('xrevrange', key, '+', '-', 'COUNT', 1)[1]
local epoch, last
if top then
  epoch, last = string.match(top[1], '^(%d+)-(%d+)$')
end
local superseded = 0
if epoch ~= ARGV[3] and ARGV[3] ~= '' and ARGV[2] ~= '0' then
  local before = redis.call('xrevrange', KEYS[2], '+', '-', 'COUNT', 1)[1]
  if before then
    local e, l = string.match(before[1], '^(%d+)-(%d+)$')
    if e == ARGV[3] and tonumber(l) >= tonumber(ARGV[1]) then
      key, epoch, last, superseded = KEYS[2], e, l, 1
    end
  end
end
if not epoch then
  return {'', '0', 0, 0}
end
local out = {epoch, last, 0, superseded}
if ARGV[2] ~= '0' then
  local entries = redis.call('xrange', key, epoch .. '-' .. ARGV[1], '+', 'COUNT', ARGV[2])
  if entries[1] then
    out[3] = string.match(entries[1][1], '-(%d+)$')
  end
  for i, entry in ipairs(entries) do
    out[i + 4] = entry[2][2]
  end
end
return out
"""


# Resumed handlers' positions (eventbus._resume): a hash per channel, a field per identity, the value
# ``epoch|offset|owner|clean``. KEYS: the hash. ARGV: the identity, this process's owner token.
# A claim makes this process the owner, keeping the position; returns what was there (nil: none).
CLAIM_SCRIPT = """
local old = redis.call('hget', KEYS[1], ARGV[1])
local epoch, offset = '', '0'
if old then
  local e, o = string.match(old, '^([^|]*)|(%d+)|')
  if e then epoch, offset = e, o end
end
if old then
  redis.call('hset', KEYS[1], ARGV[1], epoch .. '|' .. offset .. '|' .. ARGV[2] .. '|0')
end
return old
"""

# KEYS: the hash. ARGV: the identity, the owner token, the new value, ttl in ms (0: none).
# Refused (0) when another process claimed the identity since: never overwrite another's position.
SAVE_SCRIPT = """
local old = redis.call('hget', KEYS[1], ARGV[1])
if old and not string.find(old, '|' .. ARGV[2] .. '|', 1, true) then
  return 0
end
redis.call('hset', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] ~= '0' then
  redis.call('pexpire', KEYS[1], ARGV[4])
end
return 1
"""


class Envelope(NamedTuple):
    offset: int
    epoch: bytes
    payload: bytes


class HistoryPage(NamedTuple):
    """What a read returned: the history's epoch (b"": no history), its top offset, and the
    payloads of consecutive offsets from ``first`` on (none: ``first`` is 0). ``superseded``: read
    from the epoch the reader is positioned in, which a failover replaced; the reader goes on with
    the current one once it has read this one to its end."""

    epoch: bytes
    top: int
    first: int
    payloads: list[bytes]
    superseded: bool = False


class SavedPosition(NamedTuple):
    """What a claim found: the position a previous run saved, and whether it stopped cleanly."""

    epoch: bytes
    offset: int
    clean: bool


def parse_position(value: bytes | None) -> SavedPosition | None:
    """``epoch|offset|owner|clean`` as the scripts write it; None for no (or a malformed) record."""
    if not value:
        return None
    parts = value.split(b"|")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return SavedPosition(parts[0], int(parts[1]), parts[3] == b"1")


def format_position(epoch: bytes, offset: int, owner: bytes, clean: bool) -> bytes:
    return b"%s|%d|%s|%s" % (epoch, offset, owner, b"1" if clean else b"0")


class History(Protocol):
    """Where a backend keeps recoverable channels' histories (Redis, or the in-memory broker)."""

    async def publish(self, channel: Channel, payload: bytes) -> int:
        """Append ``payload`` to the history and publish it with its offset; returns the receivers."""

    async def read(self, channel: str, first: int, count: int, epoch: bytes = b"") -> HistoryPage:
        """Up to ``count`` entries from offset ``first`` on (``count=0``: only the epoch and top), of
        the current epoch, or of ``epoch`` where a failover replaced it and it still has them."""

    async def channels(self) -> list[tuple[str, bytes, int]]:
        """Every channel that has a history now: (name, epoch, top offset)."""

    async def claim_position(self, channel: str, identity: str, owner: bytes) -> bytes | None:
        """Make ``owner`` the holder of ``identity``'s position on ``channel``; the saved record."""

    async def save_position(self, channel: str, identity: str, value: bytes, owner: bytes, ttl_ms: int) -> bool:
        """Write a position record unless another owner claimed the identity since (False)."""


def history_keys(channel: str) -> tuple[str, str]:
    """The stream and top keys of ``channel``, in the slot the channel itself hashes to.

    A channel name with a hash tag of its own (``{user1}.orders``) keeps it: the keys are tagged
    with it, so that the channel, sharded or not, and its history are in one slot.
    """
    tag = channel
    start = channel.find("{")
    if start >= 0:
        end = channel.find("}", start + 1)
        if end > start + 1:
            tag = channel[start + 1 : end]
    suffix = "" if tag == channel else ":" + channel
    return f"{KEY_PREFIX}{{{tag}}}{suffix}", f"{TOP_PREFIX}{{{tag}}}{suffix}"


def channel_of(stream_key: str) -> str | None:
    """The channel whose history is ``stream_key`` (the inverse of :func:`history_keys`), or None."""
    rest = stream_key[len(KEY_PREFIX) :]
    if not stream_key.startswith(KEY_PREFIX) or not rest.startswith("{"):
        return None
    close = rest.find("}")
    # ``{tag}:name`` is the channel ``name``, ``{tag}`` the channel ``tag``: whichever of the two
    # has these keys (a name with braces of its own may read both ways; the first is meant).
    for candidate in (rest[close + 2 :], rest[1:-1]):
        if candidate and history_keys(candidate)[0] == stream_key:
            return candidate
    return None


def is_failover(epoch: bytes) -> bool:
    """Whether ``epoch`` was begun by a promoted replica (the module docstring)."""
    return epoch.endswith(FAILOVER)


def previous_key(channel: str) -> str:
    """The stream that keeps what a promoted replica had of the epoch it replaced, in the same slot."""
    stream, _ = history_keys(channel)
    return PREVIOUS_PREFIX + stream[len(KEY_PREFIX) :]


def positions_key(channel: str) -> str:
    """The hash of resumed handlers' positions on ``channel``, in the slot of its history."""
    stream, _ = history_keys(channel)
    return POSITIONS_PREFIX + stream[len(KEY_PREFIX) :]


def envelope(offset: int, epoch: bytes, payload: bytes) -> bytes:
    """What the publish script sends (for the in-memory broker, which publishes without Lua)."""
    return b"%s%d:%s:%s" % (ENVELOPE, offset, epoch, payload)


def parse_envelope(data: bytes) -> Envelope | None:
    """The offset, epoch and payload of a recoverable channel's message, or None if it has none.

    A payload that merely starts like an envelope but is not one (a binary payload) is None: it is
    delivered as it came.
    """
    if not data.startswith(ENVELOPE):
        return None
    colon = data.find(b":", 3, 24)
    if colon < 4:
        return None
    digits = data[3:colon]
    if not digits.isdigit():
        return None
    end = data.find(b":", colon + 1, colon + 40)
    if end < 0:
        return None
    return Envelope(int(digits), data[colon + 1 : end], data[end + 1 :])


class RedisHistory:
    """Histories kept in Redis (one server, a cluster, or Sentinel's master) through a command client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._publish_sha = sha1(PUBLISH_SCRIPT.encode()).hexdigest()
        self._read_sha = sha1(READ_SCRIPT.encode()).hexdigest()
        self._claim_sha = sha1(CLAIM_SCRIPT.encode()).hexdigest()
        self._read_only_scripts = True  # EVALSHA_RO (Redis 7) for reads, until the server says otherwise
        self._save_sha = sha1(SAVE_SCRIPT.encode()).hexdigest()
        # Per channel, the script's keys and arguments but the payload and epoch: built once, not
        # per publish; and the epoch each channel's history had at its last publish from here.
        self._args: dict[Channel, tuple[list[bytes], int, int, bytes, str]] = {}
        self._epochs: dict[Channel, bytes] = {}
        self._published: dict[Channel, float] = {}  # when each channel with a ttl was last published

    async def publish(self, channel: Channel, payload: bytes) -> int:
        args = self._args.get(channel)
        if args is None:
            keys = [encode_name(key) for key in (*history_keys(channel.name), previous_key(channel.name))]
            ttl_ms = 0 if channel.ttl is None else max(1, int(channel.ttl * 1000))
            command = "spublish" if channel.sharded else "publish"
            args = self._args[channel] = (keys, channel.history, ttl_ms, encode_name(channel.name), command)
        keys, history, ttl_ms, name, command = args
        epoch = self._epochs.get(channel, NO_EPOCH)
        if ttl_ms:
            # Past the ttl since our last publish the history may have expired, as it should (every
            # publish renews it): the epoch is not named, so that a new one is not taken for a loss.
            now = time.monotonic()
            if now - self._published.get(channel, now) > channel.ttl:  # type: ignore[operator]
                epoch = NO_EPOCH
            self._published[channel] = now
        reply = await self._eval(
            self._publish_sha, PUBLISH_SCRIPT, keys, payload, history, epoch, ttl_ms, name, command
        )
        if type(reply) is int:
            return reply
        # The history's epoch was not the one named: the script says which it is now.
        receivers, epoch = reply
        self._epochs[channel] = epoch if isinstance(epoch, bytes) else str(epoch).encode()
        return int(receivers)

    async def read(self, channel: str, first: int, count: int, epoch: bytes = b"") -> HistoryPage:
        keys = [encode_name(history_keys(channel)[0]), encode_name(previous_key(channel))]
        # EVALSHA_RO: a reader needs only read access to the history (docs/security.md).
        reply = await self._eval(self._read_sha, READ_SCRIPT, keys, first, count, epoch, read_only=True)
        found = reply[0] if isinstance(reply[0], bytes) else str(reply[0]).encode()
        return HistoryPage(found, int(reply[1]), int(reply[2]), reply[4:], int(reply[3]) == 1)

    async def channels(self) -> list[tuple[str, bytes, int]]:
        # SCAN (every master, on a cluster) for the streams, then each one's top entry,
        # auto-pipelined: what a pattern subscription needs to find channels it never heard from.
        names = {}
        async for key in self.client.scan_iter(match=KEY_PREFIX + "*", count=1000):
            name = channel_of(decode_name(key))
            if name is not None:
                names[key] = name
        tops = await asyncio.gather(*(self.client.xrevrange(key, count=1) for key in names), return_exceptions=True)
        found = []
        for name, top in zip(names.values(), tops, strict=True):
            if isinstance(top, BaseException):
                if isinstance(top, ResponseError):
                    continue  # not a stream: a key of someone else's under our prefix
                raise top
            if top:
                epoch, _, offset = top[0][0].partition(b"-")
                if epoch.isdigit() and offset.isdigit():
                    found.append((name, epoch, int(offset)))
        return found

    async def claim_position(self, channel: str, identity: str, owner: bytes) -> bytes | None:
        key = encode_name(positions_key(channel))
        reply = await self._eval(self._claim_sha, CLAIM_SCRIPT, [key], identity.encode(), owner)
        return reply if isinstance(reply, bytes) else None

    async def save_position(self, channel: str, identity: str, value: bytes, owner: bytes, ttl_ms: int) -> bool:
        key = encode_name(positions_key(channel))
        reply = await self._eval(self._save_sha, SAVE_SCRIPT, [key], identity.encode(), owner, value, ttl_ms)
        return bool(int(reply))

    async def _eval(self, sha: str, script: str, keys: list[bytes], *args: Any, read_only: bool = False) -> Any:
        # EVALSHA straight through the client (one command, auto-pipelined), and the script
        # loaded once if the server does not know it yet (a new or restarted server).
        command = "EVALSHA_RO" if read_only and self._read_only_scripts else "EVALSHA"
        try:
            return await self.client.execute_command(command, sha, len(keys), *keys, *args, keys=keys)
        except NoScriptError:
            await self.client.script_load(script)
            return await self.client.execute_command(command, sha, len(keys), *keys, *args, keys=keys)
        except ResponseError as exc:
            if command != "EVALSHA_RO" or "unknown command" not in str(exc).lower():
                raise
            # A server without it (Redis 6, fakeredis): read with EVALSHA from now on.
            self._read_only_scripts = False
            return await self._eval(sha, script, keys, *args)

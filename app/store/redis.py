"""The turn store in Redis: shared by every worker process and every replica.

Client: coredis 6 (anyio-based, so the store runs under asyncio and under trio; the
contract tests run it under both).  Everything that must be atomic is one Lua script,
so the store needs a single Redis >= 7.0 (not a cluster: the scripts touch keys they
derive from their arguments).

Keys (``prefix`` defaults to ``letta-stream:``), each with an expiry from the moment it
exists — a Lua script creates a key and sets its expiry in one step:

``{prefix}turn:{agent_id}``
    The agent's :class:`~app.turn_machine.TurnRecord` as JSON, with a write nonce;
    expires at :meth:`~app.turn_machine.TurnRecord.expires_at` (``PXAT``).
``{prefix}due``
    Sorted set: agent id scored by :meth:`~app.turn_machine.TurnRecord.check_at`.
    Its expiry is pushed out to the latest record expiry it indexes; members whose
    record expired are dropped by :meth:`RedisStore.due`/:meth:`RedisStore.next_due`.
``{prefix}log:{turn_id}``
    The turn's frames: a stream with explicit ids ``0-<seq>``, fields ``d`` (frame
    bytes) and ``l`` (``1`` on the last frame).  Its expiry is copied from the meta
    key on every append, so both end together.
``{prefix}log:{turn_id}:meta``
    ``{"agent_id": ...}``; ``SET NX PX ttl`` at :meth:`RedisStore.log_open`.
``{prefix}lock:{name}``
    coredis's lock (``SET NX PX`` with a random token, released by a script only by
    its owner).

Atomicity of :meth:`RedisStore.apply`: optimistic, compare-and-set in Lua.  One script
reads the record, the index score and Redis ``TIME``; :func:`~app.turn_machine.step`
runs here in Python; a second script writes the new record, its expiry and its index
entry only if the record is still byte-for-byte what was read (each write carries a
random nonce, so an A→B→A change is seen as a change), else the apply starts over.
Two round trips, over coredis's multiplexed connections.  (coredis's WATCH recipe,
``Redis.transaction``/``pipeline.watch``, holds a dedicated connection per transaction
while reading through the pool: with as many concurrent applies as the pool has
connections, 64 by default, every apply waits for a connection that never comes.  The
Lua scheme has no such limit and one round trip less.)

Clock: Redis ``TIME``.  Every replica reads the same clock, the one that also expires
the keys, so leases and deadlines need no synchronised host clocks; :meth:`apply`
reads it in the same round trip as the record.  (coredis's ``Redis.time()`` misreads
the microseconds, so the store reads ``TIME`` through a script.)

Logs are capped at ``max_frames`` exactly (the contract says *at most*): the append
script deletes the oldest entries with ``XDEL`` rather than ``XTRIM``, because Redis
records the highest deleted id (``max-deleted-entry-id`` in ``XINFO STREAM``) for
``XDEL`` but not for trimming (7.0), and that id is what tells a reader whether frames
after its seq were dropped — sequence numbers may have gaps, so the first kept frame
cannot tell.  Deleting from the head frees each stream node as it empties.

A waiting :meth:`RedisStore.log_read` blocks in ``XREAD BLOCK`` on a second client
with its own pool (``max_blocking`` connections), so readers waiting for frames never
hold the connections that the appends which would wake them need.  A log that expires
while a reader waits is noticed when the wait ends (``LogGone``).

Connections: coredis clients live inside an async context (their pool runs a task
group).  The store enters its two clients in a task of its own, started on first use
and ended by :meth:`RedisStore.aclose`, so it is used like any client:
``RedisStore.from_url(url)`` anywhere, ``await store.aclose()`` at the end (or
``async with``).  A Redis restart fails the calls in flight (``coredis.exceptions.
ConnectionError``); the next call reconnects.  Commands are never retried by the
client: a write whose reply was lost may have happened (a retried claim would find
its own record and be refused), so the caller decides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
import attrs
import coredis
from coredis.commands.script import Script
from coredis.exceptions import LockReleaseError, RedisError
from coredis.retry import NoRetryPolicy

from ..turn_machine import Input, Transition, TurnRecord, step
from .protocol import LockTimeout, LogConflict, LogFrame, LogGone, LogMeta

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "letta-stream:"
_Arg = str | bytes | int | float
RELEASE_SECONDS = 5.0
"""How long releasing a lock may take (shielded from cancellation) before it is left to expire."""

# ---------------------------------------------------------------- scripts

_CLOCK = "return redis.call('TIME')"

_READ_RECORD = """
local t = redis.call('TIME')
return {redis.call('GET', KEYS[1]), redis.call('ZSCORE', KEYS[2], ARGV[1]), t[1], t[2]}
"""
"""KEYS: record, due.  ARGV: agent id.  → {record or nil, score or nil, seconds, microseconds}."""

_WRITE_RECORD = """
local current = redis.call('GET', KEYS[1])
if (current or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[5])
  return 1
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
if redis.call('PEXPIRETIME', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[3])
end
return 1
"""
"""KEYS: record, due.  ARGV: value read ('' none), new value ('' delete), expiry ms, score, agent id.

→ 1 written, 0 the record changed since it was read."""

_DUE = """
local out, kept, limit = {}, 0, tonumber(ARGV[2])
while #out < limit do
  local batch = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', kept, limit - #out)
  if #batch == 0 then break end
  for _, agent in ipairs(batch) do
    if redis.call('EXISTS', ARGV[3] .. agent) == 1 then
      table.insert(out, agent)
      kept = kept + 1
    else
      redis.call('ZREM', KEYS[1], agent)
    end
  end
end
return out
"""
"""KEYS: due.  ARGV: now, limit, record key prefix.  → agent ids due, earliest first."""

_NEXT_DUE = """
while true do
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #first == 0 then return false end
  if redis.call('EXISTS', ARGV[1] .. first[1]) == 1 then return first[2] end
  redis.call('ZREM', KEYS[1], first[1])
end
"""
"""KEYS: due.  ARGV: record key prefix.  → the lowest score of a live record, or nil."""

_APPEND = """
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 then return -1 end
if #ARGV < 4 then return 0 end
local first = redis.pcall('XADD', KEYS[1], '0-' .. ARGV[2], 'd', ARGV[3], 'l', ARGV[4])
if type(first) == 'table' and first.err then
  if string.find(first.err, 'equal or smaller', 1, true) then return -2 end
  return first
end
for i = 5, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '0-' .. ARGV[i], 'd', ARGV[i + 1], 'l', ARGV[i + 2])
end
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if excess > 0 then
  local ids = {}
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)) do
    table.insert(ids, entry[1])
    if #ids == 1000 then
      redis.call('XDEL', KEYS[1], unpack(ids))
      ids = {}
    end
  end
  if #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
"""
"""KEYS: stream, meta.  ARGV: max frames, then (seq, data, last) per frame.

→ 0 appended, -1 no such log, -2 the first seq is not above the stream's last."""

_READ_LOG = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then
    local trimmed = tonumber(string.match(info[i + 1], '-(%d+)$'))
    if tonumber(ARGV[1]) < trimmed then return -2 end
  end
end
return redis.call('XRANGE', KEYS[1], '(0-' .. ARGV[1], '+', 'COUNT', ARGV[2])
"""
"""KEYS: stream, meta.  ARGV: after, limit.  → entries, -1 no such log, -2 trimmed past ``after``."""

_CLOSE_LOG = """
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 0
"""
"""KEYS: stream, meta.  ARGV: keep (ms)."""


def _ms(seconds: float) -> int:
    """Whole milliseconds, rounded up (a positive duration never becomes 0: ``BLOCK 0`` waits forever)."""
    return max(1, math.ceil(seconds * 1000))


def _seconds(time: Sequence[bytes]) -> float:
    """Redis ``TIME`` (seconds, microseconds) in seconds."""
    seconds, micros = time
    return int(seconds) + int(micros) / 1_000_000


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


# ---------------------------------------------------------------- the store


@attrs.define(eq=False)
class _Host:
    """The task that holds the clients' context (coredis pools run a task group inside it)."""

    ready: anyio.Event = attrs.field(factory=anyio.Event)
    closing: anyio.Event = attrs.field(factory=anyio.Event)
    done: anyio.Event = attrs.field(factory=anyio.Event)
    error: BaseException | None = None
    task: asyncio.Task[None] | None = None
    """The asyncio task (kept referenced); under trio a system task."""


class RedisStore:
    """:class:`~app.store.protocol.TurnStore` in Redis.  Build with :meth:`from_url`."""

    def __init__(
        self,
        commands: coredis.Redis[bytes],
        blocking: coredis.Redis[bytes],
        *,
        prefix: str = DEFAULT_PREFIX,
        max_frames: int = 10_000,
        margin: float = 60.0,
    ) -> None:
        """``commands`` carries everything but blocking reads, which go through ``blocking``.

        ``margin``: how long a record outlives its last deadline (``TurnRecord.expires_at``).
        """
        if max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        self._commands = commands
        self._blocking = blocking
        self.prefix = prefix
        self.max_frames = max_frames
        self.margin = margin
        self._host: _Host | None = None
        self._closed = False
        self._clock = commands.register_script(_CLOCK)
        self._read_record = commands.register_script(_READ_RECORD)
        self._write_record = commands.register_script(_WRITE_RECORD)
        self._due = commands.register_script(_DUE)
        self._next_due = commands.register_script(_NEXT_DUE)
        self._append = commands.register_script(_APPEND)
        self._read_log = commands.register_script(_READ_LOG)
        self._close_log = commands.register_script(_CLOSE_LOG)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_frames: int = 10_000,
        margin: float = 60.0,
        max_connections: int = 64,
        max_blocking: int = 256,
        timeout: float = 10.0,
    ) -> RedisStore:
        """A store on the Redis at ``url`` (``redis://[:password@]host:port/db``); connects on first use.

        ``max_connections`` bounds the pool of ordinary commands (multiplexed: a few
        connections carry many tasks), ``max_blocking`` the pool of waiting log reads
        (one connection each; more waiting readers wait for a connection, within their
        own ``wait``).  ``timeout``: seconds to wait for a reply (or a connection)
        before ``TimeoutError``.
        """
        commands: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            decode_responses=False,
            retry_policy=NoRetryPolicy(),
            max_connections=max_connections,
            stream_timeout=timeout,
            connect_timeout=timeout,
            pool_timeout=timeout,
        )
        blocking: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            decode_responses=False,
            retry_policy=NoRetryPolicy(),
            max_connections=max_blocking,
            connect_timeout=timeout,
        )
        return cls(commands, blocking, prefix=prefix, max_frames=max_frames, margin=margin)

    # ------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _ready(self) -> None:
        """Start the clients' host task on first use (or again, if it died)."""
        if self._closed:
            raise RuntimeError("the store is closed")
        host = self._host
        if host is None or (host.done.is_set() and not host.closing.is_set()):
            host = self._host = _Host()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not asyncio: trio (the only other anyio backend)
                import trio

                trio.lowlevel.spawn_system_task(self._run_host, host, name="RedisStore clients")
            else:
                host.task = loop.create_task(self._run_host(host), name="RedisStore clients")
        if not host.ready.is_set():
            await host.ready.wait()
        if host.done.is_set():
            raise RuntimeError("the Redis store's clients are not running") from host.error

    async def _run_host(self, host: _Host) -> None:
        try:
            async with self._commands, self._blocking:
                host.ready.set()
                await host.closing.wait()
        except Exception as exc:  # a system task must not raise; the next call starts a new host
            log.warning("the Redis store's clients stopped: %r", exc)
            host.error = exc
        finally:
            host.done.set()
            host.ready.set()

    async def aclose(self) -> None:
        self._closed = True
        host, self._host = self._host, None
        if host is None:
            await anyio.lowlevel.checkpoint()
            return
        host.closing.set()
        with anyio.CancelScope(shield=True):
            await host.done.wait()

    async def _eval(self, script: Script[bytes], keys: list[str], args: Sequence[_Arg]) -> Any:
        """Run one of the scripts above (``EVALSHA``, loading it first if Redis lost it); its raw reply."""
        reply: Any = await script(keys, list(args), client=self._commands)
        return reply

    # ------------------------------------------------------------ records

    def _record_key(self, agent_id: str) -> str:
        return f"{self.prefix}turn:{agent_id}"

    @property
    def _due_key(self) -> str:
        return f"{self.prefix}due"

    async def clock(self) -> float:
        await self._ready()
        return _seconds(await self._eval(self._clock, [], []))

    async def apply(self, agent_id: str, event: Input, *, grace: float) -> Transition:
        await self._ready()
        keys = [self._record_key(agent_id), self._due_key]
        while True:
            raw, score, *time = await self._eval(self._read_record, keys, [agent_id])
            now = _seconds(time)
            current = None if raw is None else _load_record(raw)
            transition = step(current, event, agent_id, now)
            new = transition.record
            if new is None:
                if current is None:
                    return transition
                args: list[_Arg] = [raw, "", 0, 0, agent_id]
            else:
                check_at = new.check_at(grace)
                if new == current and score is not None and float(score) == check_at:
                    return transition  # nothing changes: the read was the whole apply
                expires_ms = math.ceil(new.expires_at(grace, self.margin) * 1000)
                args = [raw or "", _dump_record(new), expires_ms, repr(check_at), agent_id]
            if await self._eval(self._write_record, keys, args):
                return transition
            # another process changed the record between our read and our write: read it again

    async def record(self, agent_id: str) -> TurnRecord | None:
        await self._ready()
        raw = await self._commands.get(self._record_key(agent_id))
        return None if raw is None else _load_record(raw)

    async def due(self, now: float, limit: int = 100) -> list[str]:
        if limit <= 0:
            return []
        await self._ready()
        found = await self._eval(self._due, [self._due_key], [repr(now), limit, self._record_key("")])
        return [_text(agent) for agent in found]

    async def next_due(self) -> float | None:
        await self._ready()
        score = await self._eval(self._next_due, [self._due_key], [self._record_key("")])
        return None if score is None else float(score)

    # ------------------------------------------------------------ logs

    def _log_keys(self, turn_id: str) -> list[str]:
        stream = f"{self.prefix}log:{turn_id}"
        return [stream, f"{stream}:meta"]

    async def log_open(self, meta: LogMeta, ttl: float) -> None:
        await self._ready()
        _, meta_key = self._log_keys(meta.turn_id)
        value = json.dumps({"agent_id": meta.agent_id})
        await self._commands.set(meta_key, value, condition=coredis.PureToken.NX, px=_ms(ttl))

    async def log_meta(self, turn_id: str) -> LogMeta | None:
        await self._ready()
        _, meta_key = self._log_keys(turn_id)
        raw = await self._commands.get(meta_key)
        if raw is None:
            return None
        return LogMeta(turn_id=turn_id, agent_id=str(json.loads(raw)["agent_id"]))

    def log_append_nowait(self, turn_id: str, frames: Sequence[LogFrame]) -> bool:
        return False  # every write is a round trip: the log writer batches them

    async def log_append(self, turn_id: str, frames: Sequence[LogFrame]) -> None:
        last = 0
        args: list[_Arg] = [self.max_frames]
        for frame in frames:
            if frame.seq <= last:
                raise LogConflict(f"frame {frame.seq} of turn {turn_id} is not after {last}")
            last = frame.seq
            args += [frame.seq, frame.data, "1" if frame.last else "0"]
        await self._ready()
        outcome = await self._eval(self._append, self._log_keys(turn_id), args)
        if outcome == -1:
            raise LogGone(f"no log for turn {turn_id}")
        if outcome == -2:
            raise LogConflict(f"frame {frames[0].seq} of turn {turn_id} is not after the log's last")

    async def log_read(self, turn_id: str, after: int, *, wait: float = 0.0, limit: int = 1000) -> list[LogFrame]:
        await self._ready()
        keys = self._log_keys(turn_id)
        deadline = anyio.current_time() + wait
        while True:
            found = await self._eval(self._read_log, keys, [max(after, 0), max(limit, 1)])
            if found == -1:
                raise LogGone(f"no log for turn {turn_id}")
            if found == -2:
                raise LogGone(f"frames after {after} of turn {turn_id} are no longer kept")
            frames = [_frame(entry) for entry in found][: max(limit, 0)]
            remaining = deadline - anyio.current_time()
            if frames or remaining <= 0 or limit <= 0:
                return frames
            # nothing yet: block until a frame after ``after`` arrives (then read it as above)
            with anyio.move_on_after(remaining + 1.0):  # a safety net over Redis's own BLOCK timeout
                await self._blocking.xread({keys[0]: f"0-{after}"}, count=1, block=_ms(remaining))

    async def log_close(self, turn_id: str, keep: float) -> None:
        await self._ready()
        await self._eval(self._close_log, self._log_keys(turn_id), [math.ceil(keep * 1000)])

    # ------------------------------------------------------------ locks

    @asynccontextmanager
    async def lock(self, name: str, *, ttl: float, wait: float) -> AsyncIterator[None]:
        await self._ready()
        # coredis's lock: SET NX PX with a random token; released by a script only if the token is still ours
        held = self._commands.lock(
            f"{self.prefix}lock:{name}",
            timeout=_ms(ttl) / 1000,
            sleep=min(0.05, ttl / 2),
            blocking_timeout=max(wait, 0.0),
        )
        if not await held.acquire():
            raise LockTimeout(f"lock {name!r} not acquired within {wait} s")
        try:
            yield
        finally:
            with anyio.move_on_after(RELEASE_SECONDS, shield=True):
                try:
                    await held.release()
                except LockReleaseError:
                    log.warning("lock %r expired (held longer than its %s s) before it was released", name, ttl)
                except RedisError as exc:
                    log.warning("lock %r not released (it expires in %s s): %r", name, ttl, exc)


# ---------------------------------------------------------------- encoding


def _dump_record(record: TurnRecord) -> str:
    # the nonce makes every write distinct, so the compare-and-set never mistakes A→B→A for "unchanged"
    return json.dumps({"w": os.urandom(6).hex(), "r": attrs.asdict(record)}, separators=(",", ":"))


def _load_record(raw: bytes) -> TurnRecord:
    fields: dict[str, Any] = json.loads(raw)["r"]
    return TurnRecord(**fields)


def _frame(entry: Any) -> LogFrame:
    """A stream entry ``[b"0-<seq>", [field, value, ...]]`` as a :class:`LogFrame`."""
    identifier, values = entry
    fields = dict(zip(values[::2], values[1::2], strict=True))
    seq = int(_text(identifier).partition("-")[2])
    return LogFrame(seq=seq, data=bytes(fields[b"d"]), last=fields.get(b"l") == b"1")

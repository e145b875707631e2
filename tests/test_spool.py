"""The payload spool: a run's planned payloads on disk, read back when sent."""

from __future__ import annotations

import errno
import gc
import io
import os
import sys
import tempfile
import threading

import pytest

from syncd.errors import StateError
from syncd.model import Document, Spool, Spooled


def test_what_is_put_is_read_back_by_offset_in_any_order(tmp_path):
    payloads = [f'{{"i":{i},"pad":"{"x" * (i * 37 % 5000)}"}}'.encode() for i in range(300)]
    with Spool(str(tmp_path)) as spool:
        places = [spool.put(p) for p in payloads]

        assert [places[i].read() for i in reversed(range(300))] == payloads[::-1]
        assert spool.size == sum(map(len, payloads))


def test_reads_see_bytes_still_in_the_write_buffer_and_written_after_a_read(tmp_path):
    with Spool(str(tmp_path)) as spool:
        first = spool.put(b"first")
        assert first.read() == b"first"  # not flushed yet: read flushes
        second = spool.put(b"second")
        assert (second.read(), first.read()) == (b"second", b"first")


def test_worker_threads_read_concurrently(tmp_path):
    with Spool(str(tmp_path)) as spool:
        places = {i: spool.put(f"payload {i}".encode() * (i % 50 + 1)) for i in range(2000)}
        wrong: list[int] = []

        def reader(start: int) -> None:
            for i in range(start, 2000, 4):
                if places[i].read() != f"payload {i}".encode() * (i % 50 + 1):
                    wrong.append(i)

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wrong == []


def test_the_file_has_no_name_and_its_descriptor_is_closed_with_the_spool(tmp_path):
    spool = Spool(str(tmp_path))
    place = spool.put(b"x" * 10_000)
    assert list(tmp_path.iterdir()) == []  # unnamed: nothing to clean up after a crash
    spool_file = _identity(spool._file.fileno())

    def spool_is_open() -> bool:
        # by identity, not by count: other tests' objects may be collected meanwhile
        return spool_file in {_identity(int(fd)) for fd in os.listdir("/proc/self/fd")}

    del spool
    gc.collect()
    assert place.read() == b"x" * 10_000  # a document keeps its spool open
    assert spool_is_open()

    del place
    gc.collect()
    assert not spool_is_open()


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        stat = os.fstat(fd)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def test_reading_after_close_is_a_state_error_naming_the_directory(tmp_path):
    spool = Spool(str(tmp_path))
    place = spool.put(b"payload")
    spool.close()

    with pytest.raises(StateError, match=f"payload spool .*{tmp_path}.*read"):
        place.read()


def test_a_directory_that_cannot_hold_it_is_a_state_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-dir"

    with pytest.raises(StateError, match=f"payload spool .*{missing}.*create"):
        Spool(str(missing))


def test_a_spooled_document_reads_the_same_payload_and_keeps_its_identity(tmp_path):
    document = Document.of("sku-1", {"id": "sku-1", "price": 9.5, "name": "Ünïcode"})
    with Spool(str(tmp_path)) as spool:
        spooled = document.slim(b"row").spooled(spool)

        assert isinstance(spooled.body, Spooled)
        assert (spooled.key, spooled.hash, spooled.source_hash) == ("sku-1", document.hash, b"row")
        assert spooled.canonical == document.canonical
        assert spooled.payload == document.payload
        assert spooled.size == len(document.canonical)
        assert spooled.spooled(spool) is spooled  # spooled once


def test_a_full_disk_while_writing_is_a_state_error_naming_the_directory(tmp_path, monkeypatch):
    with Spool(str(tmp_path)) as spool:

        def no_space(data: bytes) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(spool._file, "write", no_space)

        with pytest.raises(StateError, match=f"{tmp_path}.*write.*No space left on device"):
            spool.put(b"payload")
        assert spool.size == 0


_TEMPORARY_FILE = tempfile.TemporaryFile


class _DiskFullAfter(io.RawIOBase):
    """A raw temporary file on a disk that has ``room`` bytes left: every write past
    them fails with ENOSPC (the buffered file over it re-tries at flush and close)."""

    def __init__(self, directory: str, room: int) -> None:
        self._file = _TEMPORARY_FILE(dir=directory, buffering=0)
        self._room = room

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def write(self, data) -> int:  # type: ignore[override]
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def close(self) -> None:
        self._file.close()
        super().close()


@pytest.fixture
def full_disk(monkeypatch, tmp_path):
    """Spools get a buffered file on a disk with ``room`` bytes left (set it on the fixture)."""

    class Disk:
        room = 0

    def temporary_file(*, dir=None, buffering=-1, **_):
        size = buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE
        return io.BufferedRandom(_DiskFullAfter(str(tmp_path), Disk.room), buffer_size=size)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    return Disk


ENOSPC_MESSAGE = f"write: [Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}"


def test_a_full_disk_fails_the_write_with_one_message_and_closing_raises_nothing(
    tmp_path, full_disk
) -> None:
    full_disk.room = 1000
    with pytest.raises(StateError) as raised, Spool(str(tmp_path)) as spool:
        for _ in range(40):
            spool.put(b"x" * 100_000)  # past the 1 MiB buffer: the write reaches the disk

    assert str(raised.value) == (
        f"payload spool (a temporary file in {tmp_path}): {ENOSPC_MESSAGE}"
    )


def test_a_full_disk_met_only_when_flushing_fails_the_read_and_closing_raises_nothing(
    tmp_path, full_disk
) -> None:
    full_disk.room = 10
    with pytest.raises(StateError, match=r"read: \[Errno 28\]"), Spool(str(tmp_path)) as spool:
        place = spool.put(b"a payload that stays in the buffer")
        place.read()  # the read flushes: the disk is full


def test_a_full_disk_met_only_at_close_is_not_an_error(tmp_path, full_disk) -> None:
    full_disk.room = 10
    spool = Spool(str(tmp_path))
    spool.put(b"a payload nobody reads")

    spool.close()
    spool.close()


def test_a_lost_spool_on_a_full_disk_is_collected_without_an_ignored_exception(
    tmp_path, full_disk, monkeypatch
) -> None:
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    full_disk.room = 10
    spool = Spool(str(tmp_path))
    spool.put(b"a payload nobody reads")

    del spool
    gc.collect()

    assert unraisable == []


def test_quick_init_builds_what_the_dataclass_init_built() -> None:
    from dataclasses import FrozenInstanceError

    from syncd.diff import Change, ChangeKind, Operation

    document = Document("k", b"{}", b"h" * 16)
    assert (document.source_hash, document.decoded) == (None, None)
    assert Document("k", b"{}", b"h" * 16, decoded={"a": 1}).payload == {"a": 1}
    assert Operation("e", "m", "r", ()).path == "" and not Operation("e", "m", "r", ()).body
    assert Change(ChangeKind.CREATE, "k") == Change(ChangeKind.CREATE, "k", None, None)
    with pytest.raises(FrozenInstanceError):
        document.key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Document("k", b"{}")  # type: ignore[call-arg]


def test_quick_init_objects_are_of_their_class_and_copy_pickle_and_replace_as_dataclasses() -> None:
    import copy
    import dataclasses
    import pickle

    from syncd.diff import Change, ChangeKind, Operation
    from syncd.model import Acked

    acked = Acked("k", b"a" * 16, b"{}")
    document = Document(key="k", body=b"{}", hash=b"h" * 16)
    change = Change(ChangeKind.UPDATE, "k", document, previous=acked)
    operation = Operation("e", "m", "r", (change,), path="/p")
    assert type(Spooled(Spool(), 0, 0)) is Spooled
    for value in (acked, document, change, operation):
        assert dataclasses.is_dataclass(value)
        assert pickle.loads(pickle.dumps(value)) == value
        assert copy.copy(value) == value == copy.deepcopy(value)
        assert hash(value) == hash(copy.copy(value))
    assert type(change) is Change and isinstance(operation, Operation)
    assert dataclasses.replace(change, key="z") == Change(ChangeKind.UPDATE, "z", document, acked)
    assert dataclasses.replace(operation, removes_unlisted=True).removes_unlisted
    with pytest.raises(TypeError):
        Change(ChangeKind.CREATE, "k", None, None, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Change(ChangeKind.CREATE, "k", kind=ChangeKind.CREATE)  # type: ignore[misc]


def test_quick_new_makes_what_the_class_makes() -> None:
    from dataclasses import dataclass

    from syncd.diff import Change, ChangeKind, Operation
    from syncd.model import quick_new

    document = Document("k", b"{}", b"h" * 16)
    made = quick_new(Change)(Change, ChangeKind.CREATE, "k", document)
    assert type(made) is Change and made == Change(ChangeKind.CREATE, "k", document)
    request = quick_new(Operation)(Operation, "e", "m", "r", (made,), None, "/p")
    assert request == Operation("e", "m", "r", (made,), path="/p")
    assert quick_new(Document)(Document, "k", b"{}", b"h" * 16) == document

    @dataclass(frozen=True, slots=True)
    class Plain:
        value: int

    with pytest.raises(TypeError):
        quick_new(Plain)

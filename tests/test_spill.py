"""A list kept on disk (``SpilledList``): what a run plans, a chunk at a time."""

from __future__ import annotations

import pickle

import pytest

from syncd.diff import Change, ChangeKind, Operation
from syncd.errors import StateError
from syncd.model import Acked, Document, Spool
from syncd.stages.spill import SpilledList


def change(i: int, spool: Spool) -> Change:
    key = f"k{i}"
    document = Document.of(key, {"i": i, "name": f"product {i}"}).spooled(spool)
    return Change(ChangeKind.UPDATE, key, document, Acked(key, b"h" * 16, b'{"i":-1}'))


def test_items_come_back_in_order_by_index_slice_and_iteration(tmp_path):
    with Spool(str(tmp_path)) as spool:
        items = SpilledList[int](spool)
        for start in (0, 3, 10):
            items.extend(range(start, {0: 3, 3: 10, 10: 12}[start]))
        items.extend([])  # an empty chunk is none

        assert len(items) == 12
        assert list(items) == list(range(12))
        assert [items[i] for i in range(12)] == list(range(12))
        assert items[-1] == 11 and items[3] == 3 and items[2] == 2
        assert items[2:5] == (2, 3, 4)
        assert items == tuple(range(12)) and items != tuple(range(11))
        assert len(list(items.chunks())) == 3
        with pytest.raises(IndexError):
            items[12]


def test_an_empty_one_equals_the_empty_tuple_a_plan_used_to_hold(tmp_path):
    with Spool(str(tmp_path)) as spool:
        assert SpilledList(spool) == ()
        assert not SpilledList(spool)
        assert [SpilledList(spool)] == [()]


def test_changes_are_copied_to_disk_with_their_spooled_payloads_and_read_back_whole(tmp_path):
    with Spool(str(tmp_path)) as spool:
        changes = [change(i, spool) for i in range(5)]
        operations = [Operation("block.create", "create", "why", tuple(changes), path="/p")]
        spilled = SpilledList[Operation](spool, operations)
        written = spool.size
        operations.clear()  # the list keeps no reference to what it was given

        (back,) = list(spilled)

        assert spool.size == written, "reading back writes nothing"
        assert back.keys == tuple(f"k{i}" for i in range(5))
        assert [c.document.payload for c in back.changes] == [  # type: ignore[union-attr]
            {"i": i, "name": f"product {i}"} for i in range(5)
        ]
        assert back.changes[2].previous == Acked("k2", b"h" * 16, b'{"i":-1}')
        assert back.changes[2].kind is ChangeKind.UPDATE and back.path == "/p"


def test_a_spooled_payload_pickled_after_its_spool_closed_names_the_spool(tmp_path):
    spool = Spool(str(tmp_path))
    data = pickle.dumps(change(1, spool))
    spool.close()
    del spool

    with pytest.raises(StateError, match=r"payload spool \d+ is closed"):
        pickle.loads(data)


def test_packed_changes_come_back_equal_their_payloads_moved_to_the_spool(tmp_path):
    from syncd.stages.packing import ChangePacking

    with Spool(str(tmp_path)) as spool, Spool(str(tmp_path)) as other:
        fresh = Document.of("new", {"name": "fresh", "ü": "ß\n"})  # bytes, not yet spooled
        elsewhere = Document.of("far", {"i": 2}).spooled(other)
        changes = [
            Change(ChangeKind.CREATE, "new", fresh),
            change(1, spool),
            Change(ChangeKind.UPDATE, "far", elsewhere, Acked("far", b"p" * 16, b"{}")),
            Change(ChangeKind.DELETE, "gone", None, Acked("gone", b"g" * 16, b'{"x":1}')),
            Change(ChangeKind.REFRESH, "src", fresh.slim(b"r" * 16).spooled(spool)),
        ]
        spilled = SpilledList[Change](spool, changes, packing=ChangePacking())

        back = list(spilled)

        def seen(c: Change) -> tuple[object, ...]:
            d = c.document
            body = None if d is None else (d.key, d.canonical, d.hash, d.source_hash)
            return (c.kind, c.key, body, c.previous)

        assert [seen(c) for c in back] == [seen(c) for c in changes]
        assert [c.kind for c in back] == [c.kind for c in changes]
        assert back[0].document.decoded is None  # type: ignore[union-attr]
        assert back[0].document.body.spool is spool  # type: ignore[union-attr]
        assert back[0].document.payload == {"name": "fresh", "ü": "ß\n"}  # type: ignore[union-attr]
        assert back[2].document.body.spool is other  # type: ignore[union-attr]
        assert back[4].document.source_hash == b"r" * 16  # type: ignore[union-attr]
        assert spilled[1].document.canonical == changes[1].document.canonical  # type: ignore[union-attr]


def test_packed_operations_come_back_equal_with_their_changes_and_bodies(tmp_path):
    from syncd.stages.packing import OperationPacking

    with Spool(str(tmp_path)) as spool:
        changes = [change(i, spool) for i in range(5)]
        operations = [
            Operation("block.create", "create", "why", tuple(changes[:3]), path="/p"),
            Operation("product.upsert", "INCREMENTAL_UPDATE", "w", (changes[3],), {"id": "k3"}),
            Operation("block.delete", "delete", "gone", (), None, "/d", removes_unlisted=True),
            Operation("block.create", "create", "why", (changes[4],), path="/p"),
        ]
        spilled = SpilledList[Operation](spool, operations, packing=OperationPacking())

        def seen(o: Operation) -> tuple[object, ...]:
            bodies = tuple(c.document.canonical for c in o.changes)  # type: ignore[union-attr]
            return (o.endpoint, o.mode, o.reason, o.keys, bodies, o.body, o.path)

        assert [seen(o) for o in spilled] == [seen(o) for o in operations]
        assert spilled[1].body == {"id": "k3"} and spilled[2].removes_unlisted


def test_a_first_syncs_group_packs_one_run_of_requests_and_no_column_of_nones(tmp_path):
    from syncd.stages.packing import ChangePacking, OperationPacking

    with Spool(str(tmp_path)) as spool:
        creates = [
            Change(ChangeKind.CREATE, f"k{i}", Document.of(f"k{i}", {"i": i}).slim())
            for i in range(4)
        ]
        operations = [
            Operation("product.upsert", "FULL_UPDATE", "new", (c,), None, "/product")
            for c in creates
        ]
        (heads, counts, bodies), columns = OperationPacking(hollow=True).pack(operations, spool)

        assert heads == [("product.upsert", "FULL_UPDATE", "new", "/product", False, 4)]
        assert counts == [1, 1, 1, 1] and bodies is None
        kinds, keys, document_keys, wheres, hashes, sources, previous = columns
        assert kinds == "create\0create\0create\0create"
        assert keys == ["k0", "k1", "k2", "k3"] and hashes == [c.document.hash for c in creates]  # type: ignore[union-attr]
        # the document keys are the keys; no payload, fingerprint or previous version
        assert document_keys is wheres is sources is previous is None
        assert ChangePacking.unpack(columns, spool) == [
            Change(c.kind, c.key, Document(c.key, b"", c.document.hash))
            for c in creates  # type: ignore[union-attr]
        ]


def test_a_packed_chunk_is_pickled_without_a_memo_and_an_unpacked_one_with_it(tmp_path):
    import pickletools

    from syncd.stages.packing import ChangePacking

    def memoized(items: SpilledList[Change]) -> bool:
        data = items._chunks[0].read()  # the chunk as written
        return any(op.name in ("MEMOIZE", "BINPUT") for op, _, _ in pickletools.genops(data))

    with Spool(str(tmp_path)) as spool:
        changes = [change(i, spool) for i in range(3)]

        assert not memoized(SpilledList[Change](spool, changes, packing=ChangePacking()))
        assert memoized(SpilledList[Change](spool, changes))


@pytest.mark.parametrize("hollow", [False, True])
def test_hollow_packings_keep_keys_and_hashes_and_point_at_no_payload(tmp_path, hollow):
    """What a plan only counted and shown spills: no payload (not even a fresh one put in
    the spool), so no chunk holds the spool below it (``lowest`` as ``lowest_offset``)."""
    from syncd.stages.packing import ChangePacking, OperationPacking, lowest_offset

    with Spool(str(tmp_path)) as spool:
        fresh = Change(ChangeKind.CREATE, "new", Document.of("new", {"i": 0}).slim(b"s" * 16))
        changes = [change(1, spool), fresh, change(2, spool)]
        operations = [Operation("block.create", "create", "why", tuple(changes), path="/p")]
        written = spool.size
        for packing, items in (
            (ChangePacking(hollow=hollow), changes),
            (OperationPacking(hollow=hollow), operations),
        ):
            data = packing.pack(items, spool)  # type: ignore[attr-defined]
            rows = data if isinstance(packing, ChangePacking) else data[1]

            assert packing.lowest(data) == lowest_offset(rows)
            assert (packing.lowest(data) is None) is hollow
        assert (spool.size == written) is hollow, "a hollow packing spools no payload"
        back = SpilledList[Change](spool, changes, packing=ChangePacking(hollow=hollow))
        assert [(c.kind, c.key, c.document.hash, c.document.source_hash) for c in back] == [  # type: ignore[union-attr]
            (c.kind, c.key, c.document.hash, c.document.source_hash)  # type: ignore[union-attr]
            for c in changes
        ]
        bodies = [c.document.canonical for c in back]  # type: ignore[union-attr]
        assert bodies == ([b""] * 3 if hollow else [c.document.canonical for c in changes])  # type: ignore[union-attr]


def test_an_outboxs_journal_packs_keys_markers_and_replaced_versions_and_reads_them_back(
    tmp_path,
):
    """Creates cost about their key's length; updates keep their replaced version when
    kept; a key holding a NUL still round-trips."""
    from syncd.diff import ChangeKind, SentCopy
    from syncd.model import Acked
    from syncd.stages.packing import SentCopyPacking

    copies = [
        SentCopy("a", ChangeKind.CREATE, None),
        SentCopy("b", ChangeKind.UPDATE, Acked("b", b"h" * 16, b'{"x":1}')),
        SentCopy("c", ChangeKind.UPDATE, None, False),
        SentCopy("d\x00e", ChangeKind.CREATE, None),
    ]
    with Spool(str(tmp_path)) as spool:
        for items in (copies, copies[:3]):
            spilled = SpilledList[SentCopy](spool, items, packing=SentCopyPacking())
            assert list(spilled) == items
        creates = [SentCopy(f"P{i:07d}", ChangeKind.CREATE, None) for i in range(2000)]
        before = spool.size
        SpilledList[SentCopy](spool, creates, packing=SentCopyPacking())
        assert spool.size - before < 2000 * 11  # ~a key's length each

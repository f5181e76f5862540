"""The catalog's graph split into code locations (COMPOSABLE_CODE_LOCATIONS): every audience
and sync in exactly one, a run's assets all in one, and the split stable."""

from __future__ import annotations

import uuid
from collections import Counter

import dagster as dg
import pytest

from composable_dagster.catalog.graph import (
    AudienceNode,
    CatalogGraph,
    SyncNode,
    WorkspaceGraph,
    audience_shards,
)
from composable_dagster.defs.catalog_assets import catalog_definitions
from composable_dagster.names import location_names

from .test_catalog_assets import DEPENDENCIES


def _slug(prefix: str, node_id: str) -> str:
    return f"{prefix}_{node_id.replace('-', '')[-12:]}"


def _audience(audience_id: str, *references: str) -> AudienceNode:
    return AudienceNode(
        id=audience_id,
        slug=_slug("a", audience_id),
        name=audience_id,
        description="",
        model_ids=("customers",),
        audience_ids=tuple(references),
    )


def _sync(audience_id: str) -> SyncNode:
    return SyncNode(
        id=f"sync-{audience_id}",
        slug=_slug("s", audience_id),
        name="s",
        description="",
        audience_id=audience_id,
        destination_type="webhook",
        sync_mode="upsert",
        schedule="0 * * * *",
        status="active",
    )


def _graph(audiences: list[AudienceNode]) -> CatalogGraph:
    return CatalogGraph(
        workspaces=(
            WorkspaceGraph(
                id="w1",
                slug="demo",
                model_tables={"customers": ((None, "customers"),), "unused": ((None, "x"),)},
                audiences=tuple(audiences),
                syncs=tuple(_sync(a.id) for a in audiences),
            ),
        )
    )


def _ids(count: int) -> list[str]:
    return [str(uuid.UUID(int=i * 7919 + 1)) for i in range(count)]


def test_every_audience_and_sync_is_in_exactly_one_shard_and_the_split_is_even() -> None:
    graph = _graph([_audience(i) for i in _ids(800)])
    shards = [graph.shard(i, 4) for i in range(4)]
    audiences = Counter(a.id for s in shards for w in s.workspaces for a in w.audiences)
    syncs = Counter(x.audience_id for s in shards for w in s.workspaces for x in w.syncs)
    assert set(audiences.values()) == {1} and len(audiences) == 800
    assert syncs == audiences  # each sync with its audience
    sizes = [sum(len(w.audiences) for w in s.workspaces) for s in shards]
    assert min(sizes) > 150, sizes  # 200 each on average
    # A shard keeps only the models its audiences read.
    assert all(set(w.model_tables) == {"customers"} for s in shards for w in s.workspaces)


def test_audiences_linked_by_references_share_a_shard() -> None:
    ids = _ids(200)
    # A chain a0 <- a1 <- a2 (a1 references a0, a2 references a1), and a pair referencing
    # one audience from both sides: all of each group in one shard, whatever the hashes.
    audiences = [_audience(i) for i in ids[5:]]
    audiences += [
        _audience(ids[0]),
        _audience(ids[1], ids[0]),
        _audience(ids[2], ids[1]),
        _audience(ids[3], ids[4]),
        _audience(ids[4]),
    ]
    for count in (2, 3, 8):
        shards = audience_shards(audiences, count)
        assert shards[ids[0]] == shards[ids[1]] == shards[ids[2]]
        assert shards[ids[3]] == shards[ids[4]]
        assert set(shards.values()) == set(range(count))  # all shards used at this size


def test_the_split_is_stable_and_one_location_is_the_whole_graph() -> None:
    graph = _graph([_audience(i) for i in _ids(50)])
    assert graph.shard(0, 1) is graph
    assert [graph.shard(i, 3).digest() for i in range(3)] == [
        CatalogGraph.from_json(graph.to_json()).shard(i, 3).digest() for i in range(3)
    ]
    shard_of_audience = audience_shards(graph.workspaces[0].audiences, 3)
    assert {s.id: shard_of_audience[s.audience_id] for s in graph.workspaces[0].syncs} == {
        s.id: i for i in range(3) for w in graph.shard(i, 3).workspaces for s in w.syncs
    }
    assert graph.shards(3) == tuple(graph.shard(i, 3) for i in range(3))
    assert location_names("composable", 1) == ("composable",)
    assert location_names("composable", 3) == ("composable_0", "composable_1", "composable_2")


def test_a_change_in_one_shard_leaves_the_others_digests_as_they_were() -> None:
    audiences = [_audience(i) for i in _ids(60)]
    before = _graph(audiences)
    added = _audience(str(uuid.uuid4()))
    after = _graph([*audiences, added])
    moved = audience_shards([*audiences, added], 4)[added.id]
    for i in range(4):
        same = before.shard(i, 4).digest() == after.shard(i, 4).digest()
        assert same == (i != moved)


@pytest.mark.parametrize("count", [2, 5])
def test_a_runs_assets_are_defined_in_one_shards_definitions(count: int) -> None:
    """A sync's run materializes its audience, which reads audiences it references: the
    definitions of one shard hold them all, so a run never spans two code locations."""
    ids = _ids(40)
    audiences = [_audience(i) for i in ids[3:]]
    audiences += [_audience(ids[0]), _audience(ids[1], ids[0]), _audience(ids[2], ids[1])]
    graph = _graph(audiences)
    definitions = [
        catalog_definitions(
            graph.shard(i, count),
            table_assets={},
            kind="duckdb",
            max_member_drop=0.5,
            **DEPENDENCIES,
        )
        for i in range(count)
    ]
    keys = [set(d.resolve_asset_graph().get_all_asset_keys()) for d in definitions]
    assert sum(len(k) for k in keys) == 2 * len(audiences)  # an audience and a sync each
    chain = {dg.AssetKey(["demo", "audiences", _slug("a", i)]) for i in ids[:3]}
    assert sum(1 for k in keys if chain <= k) == 1
    schedules = [len(list(d.schedules or [])) for d in definitions]
    assert sum(schedules) == len(audiences)

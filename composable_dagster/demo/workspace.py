"""The demo workspace: models, relationships, traits and a file destination over the demo
warehouse. Built through the same catalog services as the API, and idempotent: what exists
(by name) is kept, what is missing is created.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from composable_dagster.catalog import destinations, models, relationships, traits, workspaces
from composable_dagster.catalog.common import list_owned
from composable_dagster.catalog.secret_box import SecretBox
from composable_dagster.catalog.tables import Destination, Model, Relationship, Trait, Workspace
from composable_dagster.destinations import DestinationScope
from composable_dagster.filters.schema import Cardinality, EntityType, ResultType, TraitType
from composable_dagster.settings import Settings

DEMO_SLUG = "demo"


@dataclass(frozen=True, slots=True)
class DemoWorkspace:
    workspace: Workspace
    model_ids: dict[str, str]
    relationship_ids: dict[str, str]
    trait_ids: dict[str, str]
    destination_id: str


def ensure_demo_workspace(
    session: Session,
    *,
    columns: models.ColumnSource,
    settings: Settings,
    box: SecretBox,
    schema: str = "analytics",
) -> DemoWorkspace:
    """Create (or complete) the demo workspace over the dbt models in `schema`; its file
    destination writes into the workspace's export directory (`<export root>/demo/`)."""
    workspace = workspaces.workspace_by_slug(session, DEMO_SLUG) or workspaces.create_workspace(
        session, name="Demo", slug=DEMO_SLUG
    )
    ws = workspace.id
    existing_models = {m.name: m for m in list_owned(session, Model, workspace_id=ws)}
    model_specs = [
        models.ModelCreate(
            name="customers",
            description="One row per customer (the parent of every demo audience)",
            source_schema=schema,
            source_table="customers",
            entity_type=EntityType.PARENT,
            primary_key_column="customer_id",
            timestamp_column="signup_at",
        ),
        models.ModelCreate(
            name="orders",
            description="Orders placed by customers",
            source_schema=schema,
            source_table="orders",
            entity_type=EntityType.RELATED,
            primary_key_column="order_id",
            timestamp_column="ordered_at",
        ),
        models.ModelCreate(
            name="events",
            description="Behavioural events (page views, purchases, email opens, ...)",
            source_schema=schema,
            source_table="events",
            entity_type=EntityType.EVENT,
            primary_key_column="event_id",
            timestamp_column="occurred_at",
        ),
    ]
    for spec in model_specs:
        if spec.name not in existing_models:
            existing_models[spec.name] = models.create_model(
                session, workspace_id=ws, spec=spec, columns=columns, created_by=None
            )
    model_ids = {name: row.id for name, row in existing_models.items()}

    existing_rels = {r.name: r for r in list_owned(session, Relationship, workspace_id=ws)}
    for name, target, column in (
        ("customer_orders", "orders", "customer_id"),
        ("customer_events", "events", "customer_id"),
    ):
        if name not in existing_rels:
            existing_rels[name] = relationships.create_relationship(
                session,
                workspace_id=ws,
                spec=relationships.RelationshipCreate(
                    name=name,
                    from_model_id=model_ids["customers"],
                    to_model_id=model_ids[target],
                    from_column="customer_id",
                    to_column=column,
                    cardinality=Cardinality.ONE_TO_MANY,
                ),
                created_by=None,
            )
    rel_ids = {name: row.id for name, row in existing_rels.items()}

    existing_traits = {t.slug: t for t in list_owned(session, Trait, workspace_id=ws)}
    trait_specs = [
        ("Order count", "order_count", TraitType.AGGREGATION, ResultType.NUMBER,
         {"relationship_id": rel_ids["customer_orders"], "function": "count"}),
        ("Total spend", "total_spend", TraitType.AGGREGATION, ResultType.NUMBER,
         {"relationship_id": rel_ids["customer_orders"], "function": "sum", "column": "amount"}),
        ("Last order at", "last_order_at", TraitType.OCCURRENCE, ResultType.TIMESTAMP,
         {"relationship_id": rel_ids["customer_orders"], "position": "last",
          "column": "ordered_at"}),
        ("Average order value", "average_order_value", TraitType.FORMULA, ResultType.NUMBER,
         {"expression": "total_spend / order_count"}),
    ]  # fmt: skip
    for name, slug, trait_type, result_type, config in trait_specs:
        if slug not in existing_traits:
            existing_traits[slug] = traits.create_trait(
                session,
                workspace_id=ws,
                spec=traits.TraitCreate(
                    name=name,
                    slug=slug,
                    parent_model_id=model_ids["customers"],
                    trait_type=trait_type,
                    result_type=result_type,
                    config=config,
                ),
                created_by=None,
            )

    destination = next(
        iter(list_owned(session, Destination, workspace_id=ws, name="Demo CSV export")), None
    )
    if destination is None:
        destination = destinations.create_destination(
            session,
            workspace_id=ws,
            spec=destinations.DestinationCreate(
                name="Demo CSV export",
                destination_type="file",
                config={"path": ".", "format": "csv"},
            ),
            created_by=None,
            scope=DestinationScope.for_workspace(settings, workspace.slug),
            box=box,
        )
    return DemoWorkspace(
        workspace=workspace,
        model_ids=model_ids,
        relationship_ids=rel_ids,
        trait_ids={slug: row.id for slug, row in existing_traits.items()},
        destination_id=destination.id,
    )

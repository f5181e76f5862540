"""What a sync is, resolved from its catalog values: pure, below every other package but
`filters/`. Catalog validation and run-time resolution both call `resolve_sync` here."""

{{
  config(
    indexes=[
      {'columns': ['customer_id', 'occurred_at']},
      {'columns': ['occurred_at']},
    ]
  )
}}
-- Behavioural events (event conditions such as "3 purchases within 30 days").
-- Kept in occurred_at order so DuckDB can skip row groups outside a time window. The indexes
-- (PostgreSQL only; DuckDB ignores them) serve time-window and per-customer event lookups.
select
    cast(event_id as bigint) as event_id,
    cast(customer_id as varchar) as customer_id,
    lower(trim(event_type)) as event_type,
    cast(occurred_at as timestamp) as occurred_at,
    lower(trim(channel)) as channel,
    nullif(lower(trim(product_category)), '') as product_category,
    cast(revenue as double precision) as revenue
from {{ source('raw', 'events') }}
order by occurred_at

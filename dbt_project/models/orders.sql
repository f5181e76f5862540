{{
  config(
    indexes=[
      {'columns': ['order_id'], 'unique': true},
      {'columns': ['customer_id']},
      {'columns': ['ordered_at']},
    ]
  )
}}
-- Orders related to customers (relation conditions such as "at least 2 electronics orders").
select
    cast(order_id as varchar) as order_id,
    cast(customer_id as varchar) as customer_id,
    lower(trim(category)) as category,
    cast(amount as double precision) as amount,
    lower(trim(status)) as status,
    cast(ordered_at as timestamp) as ordered_at
from {{ source('raw', 'orders') }}

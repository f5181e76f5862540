{{
  config(
    indexes=[{'columns': ['customer_id'], 'unique': true}, {'columns': ['email_domain']}]
  )
}}
-- The parent model of every demo audience: one row per customer.
-- Emails arrive with stray spaces and mixed case; normalising here means audiences and
-- destination matching compare like with like, and email_domain turns the common
-- "ends with @gmail.com" filter into a cheap equality test.
with source as (
    select * from {{ source('raw', 'customers') }}
),

cleaned as (
    select
        cast(customer_id as varchar) as customer_id,
        nullif(lower(trim(email)), '') as email,
        nullif(trim(phone), '') as phone,
        trim(first_name) as first_name,
        trim(last_name) as last_name,
        upper(trim(country)) as country,
        lower(trim(plan)) as plan,
        cast(lifetime_value as double precision) as lifetime_value,
        cast(signup_at as timestamp) as signup_at,
        cast(is_subscribed as boolean) as is_subscribed,
        cast(age as integer) as age
    from source
)

select
    customer_id,
    email,
    nullif(split_part(email, '@', 2), '') as email_domain,
    phone,
    first_name,
    last_name,
    country,
    plan,
    lifetime_value,
    signup_at,
    is_subscribed,
    age
from cleaned

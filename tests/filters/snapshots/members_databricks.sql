SELECT
  p.`id` AS `entity_key`
FROM `main`.`customers` AS p
WHERE
  RIGHT(p.`email`, 10) = '@gmail.com'
  AND LOCATE('50%_off', p.`name`) > 0
  AND (
    p.`age` BETWEEN 18 AND 30
    OR NOT (
      NOT p.`country` IS NULL AND p.`country` IN ('DE', 'FR')
    )
  )
  AND p.`id` IN (
    SELECT
      r1.`customer_id` AS `fk`
    FROM `main`.`orders` AS r1
    WHERE
      NOT r1.`customer_id` IS NULL AND r1.`category` = 'books'
    GROUP BY
      r1.`customer_id`
    HAVING
      COUNT(*) >= 2
  )
  AND p.`id` IN (
    SELECT
      r2.`customer_id` AS `fk`
    FROM `main`.`orders` AS r2
    WHERE
      NOT r2.`customer_id` IS NULL
    GROUP BY
      r2.`customer_id`
    HAVING
      COUNT(*) > 1
  )
  AND p.`id` IN (
    SELECT
      r3.`customer_id` AS `fk`
    FROM `main`.`events` AS r3
    WHERE
      NOT r3.`customer_id` IS NULL
      AND r3.`event_type` = 'purchase'
      AND r3.`occurred_at` >= CAST('2024-05-16 12:00:00' AS TIMESTAMP)
      AND r3.`occurred_at` <= CAST('2024-06-15 12:00:00' AS TIMESTAMP)
    GROUP BY
      r3.`customer_id`
    HAVING
      COUNT(*) >= 3
  )
  AND p.`id` IN (
    SELECT
      j5.`customer_id` AS `fk`
    FROM `main`.`favorites` AS j5
    INNER JOIN `main`.`products` AS r4
      ON j5.`product_id` = r4.`product_id`
    WHERE
      NOT j5.`customer_id` IS NULL
    GROUP BY
      j5.`customer_id`
    HAVING
      SUM(CASE WHEN r4.`brand` = 'x' THEN 0 ELSE 1 END) = 0
  )
  AND p.`id` IN (
    SELECT
      t15.`entity_key` AS `fk`
    FROM (
      SELECT
        p6.`id` AS `entity_key`,
        CAST(f10.`value` AS DOUBLE) / NULLIF(CAST(f14.`value` AS DOUBLE), 0) AS `value`
      FROM `main`.`customers` AS p6
      LEFT JOIN (
        SELECT
          p7.`id` AS `entity_key`,
          a9.`value` AS `value`
        FROM `main`.`customers` AS p7
        LEFT JOIN (
          SELECT
            r8.`customer_id` AS `fk`,
            SUM(r8.`amount`) AS `value`
          FROM `main`.`orders` AS r8
          WHERE
            NOT r8.`customer_id` IS NULL
          GROUP BY
            r8.`customer_id`
        ) AS a9
          ON a9.`fk` = p7.`id`
      ) AS f10
        ON f10.`entity_key` = p6.`id`
      LEFT JOIN (
        SELECT
          p11.`id` AS `entity_key`,
          COALESCE(a13.`value`, 0) AS `value`
        FROM `main`.`customers` AS p11
        LEFT JOIN (
          SELECT
            r12.`customer_id` AS `fk`,
            COUNT(*) AS `value`
          FROM `main`.`orders` AS r12
          WHERE
            NOT r12.`customer_id` IS NULL
          GROUP BY
            r12.`customer_id`
        ) AS a13
          ON a13.`fk` = p11.`id`
      ) AS f14
        ON f14.`entity_key` = p6.`id`
    ) AS t15
    WHERE
      NOT t15.`entity_key` IS NULL AND t15.`value` > 10
  )
  AND NOT (
    NOT p.`age` IS NULL AND p.`age` >= 30
  )

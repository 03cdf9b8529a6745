-- Hot path, the outcome: one row when appended, none otherwise; and the
-- notification ($4 = '' sends none).
SELECT st.version - cardinality($5) + 1, st.version, st.transaction_id, l.global_position,
       CASE WHEN $4 <> '' THEN pg_notify($4, '')::text END
  FROM stream st, last l

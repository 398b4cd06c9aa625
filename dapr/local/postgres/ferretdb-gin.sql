-- Run once in the `ferretdb` database of the local PostgreSQL cluster (dapr/local/stack.py).
--
-- FerretDB 1.24 pushes an equality filter down to PostgreSQL as `_jsonb -> $1 @> $2` (or
-- `_jsonb #> $1 @> $2` for a dotted field), but creates each MongoDB index as a btree on
-- `(_jsonb -> 'field')`, which cannot serve `@>`: every query scanned its table. This event
-- trigger adds, for each btree index FerretDB creates, a GIN index on its first key in the form
-- the filter uses. The planner matches it only when the key parameter is known at planning time,
-- hence the server's plan_cache_mode = force_custom_plan (pgx caches prepared statements).
CREATE OR REPLACE FUNCTION shop_gin_for_ferretdb_index() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  cmd record;
  idx record;
  path text[];
  key_expr text;
BEGIN
  FOR cmd IN SELECT objid FROM pg_event_trigger_ddl_commands()
             WHERE command_tag = 'CREATE INDEX' AND object_type = 'index' LOOP
    SELECT ic.relname AS index_name, am.amname, ns.nspname, tc.relname AS table_name,
           pg_get_indexdef(cmd.objid, 1, false) AS first_key
      INTO idx
      FROM pg_index i
      JOIN pg_class ic ON ic.oid = i.indexrelid
      JOIN pg_am am ON am.oid = ic.relam
      JOIN pg_class tc ON tc.oid = i.indrelid
      JOIN pg_namespace ns ON ns.oid = tc.relnamespace
     WHERE i.indexrelid = cmd.objid;
    -- Only FerretDB's own (btree, on _jsonb); the GIN indexes made here fire this trigger too.
    CONTINUE WHEN idx.amname <> 'btree' OR idx.first_key NOT LIKE '%_jsonb -> %';
    SELECT array_agg(replace(m[1], '''''', '''') ORDER BY n) INTO path
      FROM regexp_matches(idx.first_key, '''((?:[^'']|'''')*)''::text', 'g') WITH ORDINALITY AS t(m, n);
    CONTINUE WHEN path IS NULL;
    IF array_length(path, 1) = 1 THEN
      key_expr := format('(_jsonb -> %L::text)', path[1]);
    ELSE
      key_expr := format('(_jsonb #> %L::text[])', path::text);
    END IF;
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin (%s jsonb_path_ops)',
                   left(idx.index_name, 59) || '_gin', idx.nspname, idx.table_name, key_expr);
  END LOOP;
END
$$;

DROP EVENT TRIGGER IF EXISTS shop_gin_for_ferretdb_index;
CREATE EVENT TRIGGER shop_gin_for_ferretdb_index ON ddl_command_end
  WHEN TAG IN ('CREATE INDEX') EXECUTE FUNCTION shop_gin_for_ferretdb_index();

"""The trigger of the PostgreSQL feed: a function and a row trigger that ``pg_notify`` a
product's key on insert, update and delete, as SQL text (``syncd feed-trigger`` prints it;
``syncd.feeds.postgres.install_trigger`` runs it). Pure text: needs no database driver."""

from __future__ import annotations

import re

from syncd.config.feeds_more import CHANNEL_PATTERN

FUNCTION_NAME = "syncd_notify_change"
"""The trigger function (one per database, shared by every table and channel)."""
MAX_PAYLOAD_BYTES = 7999
"""NOTIFY's payload must be shorter than 8000 bytes: a longer one is not sent (a
warning in the database log; the next reconcile covers the product)."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def quote_ident(name: str) -> str:
    """An SQL identifier, double-quoted (so case and special characters are kept)."""
    if not name or "\x00" in name:
        raise ValueError("an identifier can't be empty or hold a NUL character")
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: str) -> str:
    """A table name, optionally schema-qualified (``shop.products``), each part quoted."""
    parts = table.split(".")
    if len(parts) > 2 or not all(_NAME.match(part) for part in parts):
        raise ValueError(
            f"table {table!r}: give a plain name, optionally schema-qualified (shop.products)"
        )
    return ".".join(quote_ident(part) for part in parts)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def check_channel(channel: str) -> str:
    if not re.match(CHANNEL_PATTERN, channel):
        raise ValueError(
            f"channel {channel!r}: a plain identifier of letters, digits and _ (63 at most)"
        )
    return channel


def trigger_name(channel: str) -> str:
    return f"syncd_notify_{check_channel(channel)}"


FUNCTION_SQL = f"""\
-- syncd change feed: notify a product's key on insert, update and delete.
-- Arguments of the trigger: the channel, the key column. Payload (JSON, < 8000 bytes):
--   {{"key": "<the key as text>", "op": "insert|update|delete", "at": <epoch seconds>}}
-- The trigger is a DEFERRABLE INITIALLY DEFERRED constraint trigger: it runs when the
-- transaction commits, so "at" is (within microseconds) the commit time, and the
-- notification is delivered at commit (never for a transaction rolled back).
-- An update that changes the key notifies the old key too (it is gone).
-- TRUNCATE fires no row trigger: the next scheduled reconcile covers it.
CREATE OR REPLACE FUNCTION {FUNCTION_NAME}() RETURNS trigger
LANGUAGE plpgsql AS $syncd$
DECLARE
  channel text := TG_ARGV[0];
  key_column text := TG_ARGV[1];
  at double precision := extract(epoch FROM clock_timestamp());
  new_key text;
  old_key text;
  payload text;
BEGIN
  IF TG_OP <> 'DELETE' THEN
    new_key := to_jsonb(NEW) ->> key_column;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    old_key := to_jsonb(OLD) ->> key_column;
  END IF;
  IF new_key IS NOT NULL THEN
    payload := json_build_object('key', new_key, 'op', lower(TG_OP), 'at', at)::text;
    IF octet_length(payload) > {MAX_PAYLOAD_BYTES} THEN
      RAISE WARNING 'syncd: key of % bytes too long to notify; the next reconcile covers it',
        octet_length(new_key);
    ELSE
      PERFORM pg_notify(channel, payload);
    END IF;
  END IF;
  IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
    payload := json_build_object('key', old_key, 'op', 'delete', 'at', at)::text;
    IF octet_length(payload) > {MAX_PAYLOAD_BYTES} THEN
      RAISE WARNING 'syncd: key of % bytes too long to notify; the next reconcile covers it',
        octet_length(old_key);
    ELSE
      PERFORM pg_notify(channel, payload);
    END IF;
  END IF;
  RETURN NULL;
END
$syncd$;
"""


def trigger_sql(table: str, key: str, channel: str = "syncd_products") -> str:
    """The SQL that installs the feed's trigger on ``table`` (idempotent: the function is
    ``CREATE OR REPLACE``d, the trigger dropped and created again), as one script."""
    quoted_table = quote_table(table)
    quote_ident(key)
    name = quote_ident(trigger_name(channel))
    return (
        FUNCTION_SQL
        + f"\nDROP TRIGGER IF EXISTS {name} ON {quoted_table};\n"
        + f"CREATE CONSTRAINT TRIGGER {name}\n"
        + f"  AFTER INSERT OR UPDATE OR DELETE ON {quoted_table}\n"
        + "  DEFERRABLE INITIALLY DEFERRED\n"
        + f"  FOR EACH ROW EXECUTE FUNCTION {FUNCTION_NAME}"
        + f"({_literal(channel)}, {_literal(key)});\n"
    )

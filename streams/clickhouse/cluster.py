"""The cluster form of the migrations: replicated local tables + Distributed tables.

Generated from ``schemas/clickhouse/*.sql`` so the single-node DDL stays the one source of
truth for columns (``touchstream migrate --cluster-ddl NAME`` prints it; see
``deploy/clickhouse/cluster/README.md``).
"""

from __future__ import annotations

import re

from streams.clickhouse.migrate import load, statements

_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)")
_VIEW = re.compile(r"(CREATE (?:OR REPLACE )?VIEW (?:IF NOT EXISTS )?\{db\}\.\w+)")
_ALTER = re.compile(r"ALTER TABLE \{db\}\.(\w+)")
_ENGINE = re.compile(r"ENGINE = ReplacingMergeTree\((\w*)\)")
#: a sorting-key change: the replicated table's own, meaningless (and refused) on its Distributed front
_ORDER_BY = re.compile(r",\s*MODIFY ORDER BY \(.*\)\s*$", re.S)


def cluster_ddl(cluster: str, db: str = "touchstream", raw_ttl_days: int = 400) -> str:
    """Every table as ``<name>_local`` (ReplicatedReplacingMergeTree, sharded by tenant) plus a
    Distributed ``<name>`` the sink and queries use; ``{shard}``/``{replica}`` stay server macros."""
    out = [f"-- touchstream cluster DDL for cluster '{cluster}', generated from schemas/clickhouse/"]
    for migration in load():
        for stmt in statements(migration.sql):
            m = _TABLE.match(stmt)
            alter = _ALTER.match(stmt)
            if alter:  # a column change applies to the replicated table and its Distributed front
                name = alter.group(1)
                for target in (f"{name}_local", name):
                    change = stmt if target != name else _ORDER_BY.sub("", stmt)
                    out.append(change.replace(f"{{db}}.{name}", f"{{db}}.{target} ON CLUSTER '{cluster}'", 1) + ";")
            elif m:
                name = m.group(1)
                local = stmt.replace(f"{{db}}.{name}", f"{{db}}.{name}_local ON CLUSTER '{cluster}'", 1)
                path = f"'/clickhouse/tables/{{shard}}/{db}/{name}', '{{replica}}'"
                local = _ENGINE.sub(
                    lambda e, p=path: f"ENGINE = ReplicatedReplacingMergeTree({p}"
                    + (f", {e.group(1)})" if e.group(1) else ")"),
                    local,
                )
                local = local.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
                out.append(local + ";")
                out.append(f"CREATE TABLE IF NOT EXISTS {{db}}.{name} ON CLUSTER '{cluster}' AS {{db}}.{name}_local\n"
                           f"ENGINE = Distributed('{cluster}', '{db}', '{name}_local', cityHash64(tenant_id));")
            else:
                out.append(_VIEW.sub(rf"\1 ON CLUSTER '{cluster}'", stmt) + ";")
    return "\n\n".join(out).replace("{db}", db).replace("{raw_ttl_days}", str(raw_ttl_days)) + "\n"

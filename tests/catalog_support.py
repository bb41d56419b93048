"""Reaching a catalog behind kiln's back, whichever store holds it: what an attacker or a bug would do."""

from __future__ import annotations

from ansible_collections.kiln.immutable.plugins.module_utils.common.paths import is_database_url


def raw_sql(
    location: str, statements: list[tuple[str, tuple]] | str, params: tuple = ()
) -> list[list[tuple]]:
    """Run SQL (``?`` placeholders) on the catalog at ``location`` outside kiln; returns each result."""
    if isinstance(statements, str):
        statements = [(statements, params)]
    if is_database_url(location):
        import psycopg

        with psycopg.connect(location) as conn:
            out = []
            for sql, args in statements:
                cur = conn.execute(sql.replace("?", "%s"), args)
                out.append(cur.fetchall() if cur.description else [])
            return out
    import sqlite3

    conn = sqlite3.connect(location)
    try:
        out = [conn.execute(sql, args).fetchall() for sql, args in statements]
        conn.commit()
        return out
    finally:
        conn.close()

"""Row hashes for anti-entropy digests (``globalhub/protocol/digest.py``), computed by PostgreSQL itself.

Generated columns: whatever writes a row (the ingest, an admin, a hand-made UPDATE), its hash follows its columns,
so a digest over them describes the rows as they are. The model classes do not declare them: nothing writes them,
and only ``globalhub/manager/digests.py`` reads them.
"""

from django.db import migrations

HASH = "('x' || encode(substring(sha256({material}) from 1 for 8), 'hex'))::bit(64)::bigint"
OBJECT = HASH.format(material="uuid_send({id}) || coalesce(payload_digest, '\\x'::bytea)")
COMPLIANCE = HASH.format(material="uuid_send(policy_id) || decode(md5(cluster_name || '/' || compliance), 'hex')")


def add(table: str, expression: str) -> migrations.RunSQL:
    return migrations.RunSQL(
        f"ALTER TABLE {table} ADD COLUMN digest_row bigint GENERATED ALWAYS AS ({expression}) STORED",
        f"ALTER TABLE {table} DROP COLUMN digest_row",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("manager", "0010_type_version_last_sent_at"),
    ]

    operations = [
        add("manager_managedcluster", OBJECT.format(id="cluster_id")),
        add("manager_localpolicy", OBJECT.format(id="policy_id")),
        add("manager_localcompliance", COMPLIANCE),
    ]

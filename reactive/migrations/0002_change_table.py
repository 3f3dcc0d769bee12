"""The change table the capture triggers write to (the triggers follow after every migrate).

Not a Django model, so that ``flush`` (which empties every model's table) never
deletes the change rows its own deletes produce.
"""

from django.db import migrations


def create(apps, schema_editor):
    from reactive.triggers import change_table_sql

    for sql in change_table_sql(schema_editor.connection):
        schema_editor.execute(sql)


def drop(apps, schema_editor):
    from reactive.triggers import uninstall

    uninstall(schema_editor.connection.alias)


class Migration(migrations.Migration):
    dependencies = [("reactive", "0001_initial")]

    operations = [migrations.RunPython(create, drop, elidable=False)]

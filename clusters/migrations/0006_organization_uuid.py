"""Organization.uuid, the id the REST API shows: added nullable, filled row by row, then made
unique and required (Django's recipe for a unique field on a table with rows; three migrations
so that no transaction both alters the table and updates its rows)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("clusters", "0005_cluster_hosted_flags"),
    ]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="uuid",
            field=models.UUIDField(editable=False, null=True),
        ),
    ]

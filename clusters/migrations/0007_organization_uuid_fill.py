import uuid

from django.db import migrations


def fill(apps, schema_editor):
    Organization = apps.get_model("clusters", "Organization")
    for organization in Organization.objects.only("pk"):
        organization.uuid = uuid.uuid4()
        organization.save(update_fields=["uuid"])


class Migration(migrations.Migration):
    dependencies = [
        ("clusters", "0006_organization_uuid"),
    ]

    operations = [
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]

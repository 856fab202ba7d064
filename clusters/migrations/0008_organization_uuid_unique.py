import uuid

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("clusters", "0007_organization_uuid_fill"),
    ]

    operations = [
        migrations.AlterField(
            model_name="organization",
            name="uuid",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]

"""Registry backends (issue 16, item 3): the ``default`` backend, which follows the settings
(REGISTRY_URL, REGISTRY_PUBLIC_HOST, REGISTRY_TOKEN_SERVICE) for its blank fields, and every
existing registry placed on it."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def default_backend(apps, schema_editor):
    backend_model = apps.get_model("registries", "RegistryBackend")
    registry_model = apps.get_model("registries", "Registry")
    default, _ = backend_model.objects.get_or_create(name="default")
    registry_model.objects.filter(backend__isnull=True).update(backend=default)


class Migration(migrations.Migration):

    dependencies = [
        ('clusters', '0008_organization_uuid_unique'),
        ('registries', '0008_token_signing_keys'),
    ]

    operations = [
        migrations.CreateModel(
            name='RegistryBackend',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.SlugField(max_length=63, unique=True)),
                ('api_url', models.CharField(blank=True, default='', max_length=512)),
                ('public_host', models.CharField(blank=True, default='', max_length=255)),
                ('token_service', models.CharField(blank=True, default='', max_length=255)),
                ('storage', models.CharField(choices=[('filesystem', 'Local filesystem'), ('s3', 'S3 or S3-compatible'), ('gcs', 'Google Cloud Storage'), ('azure', 'Azure Blob Storage'), ('other', 'Other')], default='filesystem', max_length=16)),
                ('labels', models.JSONField(blank=True, default=dict)),
                ('weight', models.PositiveIntegerField(default=100)),
                ('capacity', models.PositiveIntegerField(blank=True, help_text='At most this many registries; empty for no limit.', null=True)),
                ('state', models.CharField(choices=[('active', 'Active'), ('draining', 'Draining')], default='active', max_length=16)),
                ('hosts_changed_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'ordering': ['name'],
            },
        ),
        migrations.RemoveIndex(
            model_name='registry',
            name='registry_canary_failed',
        ),
        migrations.AddConstraint(
            model_name='registrybackend',
            constraint=models.UniqueConstraint(condition=models.Q(('token_service', ''), _negated=True), fields=('token_service',), name='registry_backend_service_unique'),
        ),
        migrations.AddConstraint(
            model_name='registrybackend',
            constraint=models.CheckConstraint(condition=models.Q(('name', 'default'), models.Q(models.Q(('api_url', ''), _negated=True), models.Q(('public_host', ''), _negated=True), models.Q(('token_service', ''), _negated=True)), _connector='OR'), name='registry_backend_addresses_set'),
        ),
        migrations.AddConstraint(
            model_name='registrybackend',
            constraint=models.CheckConstraint(condition=models.Q(('state__in', ['active', 'draining'])), name='registry_backend_state_known'),
        ),
        migrations.AddField(
            model_name='registry',
            name='backend',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='registries', to='registries.registrybackend'),
        ),
        migrations.AddIndex(
            model_name='registry',
            index=models.Index(condition=models.Q(('canary_ok', False), ('state', 'ready')), fields=['backend', 'id'], name='registry_canary_failed_backend'),
        ),
        migrations.RunPython(default_backend, migrations.RunPython.noop),
    ]
